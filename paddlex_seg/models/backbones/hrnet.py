"""HRNet backbone.

Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition",
TPAMI 2020 (arXiv:1908.07919). Optional blocks: Squeeze-and-Excitation (Hu et al.,
arXiv:1709.01507) and polarized self-attention (Liu et al., arXiv:2107.00782).

HRNet keeps a high-resolution branch (stride 4) through the whole network and adds one
branch of half the resolution at the start of stages 2, 3 and 4. Inside a stage, each
high-resolution module runs residual blocks on every branch and then fuses: every
output branch receives the sum of all input branches, resampled to its resolution.
The backbone returns a single map: the four stage-4 branches upsampled to stride 4 and
concatenated, so ``feat_channels == [sum(stage4_num_channels)]``.

Sub-layer names (``la1``, ``tr1``, ``stage_st2_1``, ``bb_layer2_1``, ``branches_func``,
``fuse_func``, ``residual_st2_1_layer_2_1_1``, ...) are PaddleSeg's: they are the keys of
its published ``.pdparams`` files and must not change.
"""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ... import compat
from ..layers import ConvBN, ConvBNReLU, resize_to
from .registry import register

__all__ = [
    "HRNet", "HRNet_W18_Small_V1", "HRNet_W18_Small_V2", "HRNet_W18", "HRNet_W30",
    "HRNet_W32", "HRNet_W40", "HRNet_W44", "HRNet_W48", "HRNet_W60", "HRNet_W64",
]

STEM_CHANNELS = 64          # both stride-2 stem convolutions; fixed in PaddleSeg's weights
BOTTLENECK_EXPANSION = 4    # stage 1 bottlenecks output 4x their width
SE_REDUCTION = 16           # squeeze ratio of the SE blocks (PaddleSeg's weights)

# Every convolution: no bias (BatchNorm follows) and PaddleSeg's N(0, 0.001) weights.
# Set at creation, not afterwards: drawing the weights twice doubles the build time
# (seconds for the wide variants on CPU).
_CONV = dict(bias_attr=False,
             weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(mean=0.0, std=0.001)))


class HRNet(nn.Layer):
    """High-Resolution Network backbone, configurable stage by stage.

    Stage ``k`` (k = 2, 3, 4) has ``k`` parallel branches at strides 4, 8, ..., built
    from ``stage{k}_num_modules`` high-resolution modules; stage 1 is one stack of
    bottleneck blocks at stride 4.

    Args:
        stage1_num_modules (int): must be 1; stage 1 is a single bottleneck stack
            (PaddleSeg accepts the argument but ignores it). Default: 1.
        stage1_num_blocks (tuple[int]): one entry, the number of bottleneck blocks.
            Default: (4,).
        stage1_num_channels (tuple[int]): one entry, the bottleneck width (the stack
            outputs 4x this). Default: (64,).
        stage2_num_modules (int): high-resolution modules in stage 2. Default: 1.
        stage2_num_blocks (tuple[int]): basic blocks per branch, two entries. Default: (4, 4).
        stage2_num_channels (tuple[int]): channels per branch, two entries. Default: (18, 36).
        stage3_num_modules (int): modules in stage 3. Default: 4.
        stage3_num_blocks (tuple[int]): three entries. Default: (4, 4, 4).
        stage3_num_channels (tuple[int]): three entries. Default: (18, 36, 72).
        stage4_num_modules (int): modules in stage 4. Default: 3.
        stage4_num_blocks (tuple[int]): four entries. Default: (4, 4, 4, 4).
        stage4_num_channels (tuple[int]): four entries. Default: (18, 36, 72, 144).
        has_se (bool): add a Squeeze-and-Excitation block to every residual block
            (needs at least 16 channels everywhere). Default: False.
        align_corners (bool): ``align_corners`` of every bilinear upsampling. Default: False.
        padding_same (bool): pad 3x3 convolutions with ``'same'`` (asymmetric for
            stride 2 on even sizes, as PaddleSeg's default) instead of 1. Default: True.
        in_channels (int): channels of the input image. Default: 3.
        use_psa (bool): add polarized self-attention inside every basic block of
            stages 2-4. Default: False.

    Forward:
        x (Tensor): [N, in_channels, H, W].
        Returns a list with one tensor [N, sum(stage4_num_channels), ceil(H/4), ceil(W/4)].

    Example:
        >>> net = HRNet_W18()
        >>> net.feat_channels
        [270]
    """

    def __init__(self,
                 stage1_num_modules=1,
                 stage1_num_blocks=(4,),
                 stage1_num_channels=(64,),
                 stage2_num_modules=1,
                 stage2_num_blocks=(4, 4),
                 stage2_num_channels=(18, 36),
                 stage3_num_modules=4,
                 stage3_num_blocks=(4, 4, 4),
                 stage3_num_channels=(18, 36, 72),
                 stage4_num_modules=3,
                 stage4_num_blocks=(4, 4, 4, 4),
                 stage4_num_channels=(18, 36, 72, 144),
                 has_se=False,
                 align_corners=False,
                 padding_same=True,
                 in_channels=3,
                 use_psa=False):
        super().__init__()
        # === Arguments ===
        if stage1_num_modules != 1:
            raise ValueError(f"stage1_num_modules={stage1_num_modules!r} is not supported: "
                             "stage 1 is a single bottleneck stack, so it must be 1.")
        _check_positive_int("in_channels", in_channels)
        _, (stage1_blocks,), (stage1_width,) = _check_stage(
            1, stage1_num_modules, stage1_num_blocks, stage1_num_channels)
        stage2 = _check_stage(2, stage2_num_modules, stage2_num_blocks, stage2_num_channels)
        stage3 = _check_stage(3, stage3_num_modules, stage3_num_blocks, stage3_num_channels)
        stage4 = _check_stage(4, stage4_num_modules, stage4_num_blocks, stage4_num_channels)
        stage1_out = stage1_width * BOTTLENECK_EXPANSION
        if has_se:
            narrowest = min(stage1_out, *stage2[2], *stage3[2], *stage4[2])
            if narrowest < SE_REDUCTION:
                raise ValueError(f"has_se=True needs at least {SE_REDUCTION} channels in every "
                                 f"branch (the squeeze divides them by {SE_REDUCTION}); the "
                                 f"narrowest branch has {narrowest}.")

        # === Config ===
        self.align_corners = align_corners
        self.feat_channels = [sum(stage4[2])]
        padding = "same" if padding_same else 1
        block_args = dict(has_se=has_se, padding=padding)
        stage_args = dict(align_corners=align_corners, use_psa=use_psa, **block_args)

        # === Stem and stage 1 (stride 4) ===
        self.conv_layer1_1 = ConvBNReLU(in_channels, STEM_CHANNELS, 3, stride=2,
                                        padding=padding, **_CONV)
        self.conv_layer1_2 = ConvBNReLU(STEM_CHANNELS, STEM_CHANNELS, 3, stride=2,
                                        padding=padding, **_CONV)
        # "layer2": PaddleSeg's name for this stack, kept for the weight keys.
        self.la1 = _bottleneck_stack(STEM_CHANNELS, stage1_width, stage1_blocks, "layer2",
                                     **block_args)

        # === Stages 2-4, each after a transition that adds a half-resolution branch ===
        self.tr1 = _Transition([stage1_out], stage2[2], "tr1", padding)
        self.st2 = _stage(*stage2, "st2", **stage_args)
        self.tr2 = _Transition(stage2[2], stage3[2], "tr2", padding)
        self.st3 = _stage(*stage3, "st3", **stage_args)
        self.tr3 = _Transition(stage3[2], stage4[2], "tr3", padding)
        self.st4 = _stage(*stage4, "st4", **stage_args)

    def forward(self, x):
        x = self.conv_layer1_2(self.conv_layer1_1(x))
        branches = [self.la1(x)]
        for transition, stage in ((self.tr1, self.st2), (self.tr2, self.st3), (self.tr3, self.st4)):
            branches = stage(transition(branches))
        size = paddle.shape(branches[0])[2:]
        upsampled = [resize_to(b, size, self.align_corners) for b in branches[1:]]
        return [paddle.concat([branches[0]] + upsampled, axis=1)]


# === Registered variants: PaddleSeg's stage configurations ===

@register
def HRNet_W18_Small_V1(**kwargs):
    """HRNet-W18-Small-v1 (branch widths 16-128, one module per stage); feat_channels [240]."""
    config = _config(16, stage1_blocks=1, stage1_width=32, blocks=2, modules=(1, 1, 1))
    return _build("HRNet_W18_Small_V1", config, kwargs)


@register
def HRNet_W18_Small_V2(**kwargs):
    """HRNet-W18-Small-v2 (two blocks per branch); feat_channels [270]."""
    config = _config(18, stage1_blocks=2, stage1_width=64, blocks=2, modules=(1, 3, 2))
    return _build("HRNet_W18_Small_V2", config, kwargs)


@register
def HRNet_W18(**kwargs):
    """HRNet-W18; feat_channels [270]."""
    return _build("HRNet_W18", _config(18), kwargs)


@register
def HRNet_W30(**kwargs):
    """HRNet-W30; feat_channels [450]."""
    return _build("HRNet_W30", _config(30), kwargs)


@register
def HRNet_W32(**kwargs):
    """HRNet-W32; feat_channels [480]."""
    return _build("HRNet_W32", _config(32), kwargs)


@register
def HRNet_W40(**kwargs):
    """HRNet-W40; feat_channels [600]."""
    return _build("HRNet_W40", _config(40), kwargs)


@register
def HRNet_W44(**kwargs):
    """HRNet-W44; feat_channels [660]."""
    return _build("HRNet_W44", _config(44), kwargs)


@register
def HRNet_W48(**kwargs):
    """HRNet-W48; feat_channels [720]."""
    return _build("HRNet_W48", _config(48), kwargs)


@register
def HRNet_W60(**kwargs):
    """HRNet-W60; feat_channels [900]."""
    return _build("HRNet_W60", _config(60), kwargs)


@register
def HRNet_W64(**kwargs):
    """HRNet-W64; feat_channels [960]."""
    return _build("HRNet_W64", _config(64), kwargs)


def _config(width, stage1_blocks=4, stage1_width=64, blocks=4, modules=(1, 4, 3)):
    """Stage arguments of an HRNet whose branch k (0-based) has ``width * 2**k`` channels.

    ``blocks`` is the number of basic blocks of every branch, ``modules`` the number of
    high-resolution modules of stages 2, 3 and 4.
    """
    config = dict(stage1_num_modules=1, stage1_num_blocks=(stage1_blocks,),
                  stage1_num_channels=(stage1_width,))
    for stage, num_modules in zip((2, 3, 4), modules):
        config[f"stage{stage}_num_modules"] = num_modules
        config[f"stage{stage}_num_blocks"] = (blocks,) * stage
        config[f"stage{stage}_num_channels"] = tuple(width * 2 ** k for k in range(stage))
    return config


def _build(name, config, kwargs):
    fixed = sorted(set(config) & set(kwargs))
    if fixed:
        raise ValueError(f"{name} fixes {', '.join(fixed)}; build HRNet(...) directly for a "
                         "custom stage configuration.")
    return HRNet(**config, **kwargs)


# === Validation ===

def _is_positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_positive_int(name, value):
    if not _is_positive_int(value):
        raise ValueError(f"{name}={value!r} must be a positive int.")


def _check_stage(stage, num_modules, num_blocks, num_channels):
    """Validate one stage's arguments; return them as (int, tuple, tuple)."""
    _check_positive_int(f"stage{stage}_num_modules", num_modules)
    for kind, values in (("blocks", num_blocks), ("channels", num_channels)):
        if (not isinstance(values, (list, tuple)) or len(values) != stage
                or not all(_is_positive_int(v) for v in values)):
            raise ValueError(f"stage{stage}_num_{kind}={values!r} must be a list or tuple of "
                             f"{stage} positive int(s), one per branch of stage {stage}.")
    return num_modules, tuple(num_blocks), tuple(num_channels)


# === Stages, transitions and fusion ===

def _bottleneck_stack(in_channels, width, num_blocks, name, has_se, padding):
    """Stage 1: bottleneck blocks; the first one projects its shortcut."""
    blocks = []
    for i in range(num_blocks):
        block_in = in_channels if i == 0 else width * BOTTLENECK_EXPANSION
        blocks.append((f"bb_{name}_{i + 1}",
                       _Bottleneck(block_in, width, project_shortcut=i == 0,
                                   has_se=has_se, padding=padding)))
    return nn.Sequential(*blocks)


def _stage(num_modules, num_blocks, channels, name, align_corners, use_psa, has_se, padding):
    """A chain of high-resolution modules; each maps a list of branches to a list."""
    return nn.Sequential(*[
        (f"stage_{name}_{m}",
         _HighResolutionModule(num_blocks, channels, f"{name}_{m}", align_corners,
                               use_psa, has_se, padding))
        for m in range(1, num_modules + 1)
    ])


class _Transition(nn.Layer):
    """Adapts the branch list between stages.

    Existing branches pass through (a 3x3 conv when their width changes); each new
    branch is a stride-2 3x3 conv of the lowest-resolution input branch.
    """

    def __init__(self, in_channels, out_channels, name, padding):
        super().__init__()
        self._convs = []  # None marks a branch that passes through unchanged
        for i, out_ch in enumerate(out_channels):
            if i < len(in_channels) and in_channels[i] == out_ch:
                self._convs.append(None)
                continue
            new_branch = i >= len(in_channels)
            conv = ConvBNReLU(in_channels[-1] if new_branch else in_channels[i], out_ch, 3,
                              stride=2 if new_branch else 1, padding=padding, **_CONV)
            self._convs.append(self.add_sublayer(f"transition_{name}_layer_{i + 1}", conv))

    def forward(self, branches):
        outputs = []
        for i, conv in enumerate(self._convs):
            source = branches[min(i, len(branches) - 1)]
            outputs.append(source if conv is None else conv(source))
        return outputs


class _HighResolutionModule(nn.Layer):
    """Residual blocks on every branch, then an all-to-all fusion of the branches."""

    def __init__(self, num_blocks, channels, name, align_corners, use_psa, has_se, padding):
        super().__init__()
        self.branches_func = _Branches(num_blocks, channels, name, use_psa, has_se, padding)
        self.fuse_func = _Fuse(channels, name, align_corners, padding)

    def forward(self, branches):
        return self.fuse_func(self.branches_func(branches))


class _Branches(nn.Layer):
    """Independent chains of basic blocks, one per branch."""

    def __init__(self, num_blocks, channels, name, use_psa, has_se, padding):
        super().__init__()
        self._chains = []
        for i, (depth, ch) in enumerate(zip(num_blocks, channels), start=1):
            self._chains.append([
                self.add_sublayer(f"bb_{name}_branch_layer_{i}_{j}",
                                  _BasicBlock(ch, use_psa, has_se, padding))
                for j in range(1, depth + 1)
            ])

    def forward(self, branches):
        outputs = []
        for x, chain in zip(branches, self._chains):
            for block in chain:
                x = block(x)
            outputs.append(x)
        return outputs


class _Fuse(nn.Layer):
    """Every output branch i = ReLU(sum over input branches j of branch j at i's scale).

    A lower-resolution input (j > i) goes through a 1x1 ConvBN and bilinear upsampling;
    a higher-resolution one (j < i) through i - j stride-2 3x3 convolutions (ReLU and
    width of branch j between them, no ReLU and width of branch i after the last).
    """

    def __init__(self, channels, name, align_corners, padding):
        super().__init__()
        self.align_corners = align_corners
        self._paths = []  # _paths[i][j]: list of layers taking branch j to branch i
        for i, out_ch in enumerate(channels):
            row = []
            for j, in_ch in enumerate(channels):
                prefix = f"residual_{name}_layer_{i + 1}_{j + 1}"
                if j > i:
                    path = [self.add_sublayer(prefix, ConvBN(in_ch, out_ch, 1, **_CONV))]
                elif j < i:
                    steps = i - j
                    path = []
                    for k in range(1, steps + 1):
                        last = k == steps
                        conv_type = ConvBN if last else ConvBNReLU
                        conv = conv_type(in_ch, out_ch if last else in_ch, 3, stride=2,
                                         padding=padding, **_CONV)
                        path.append(self.add_sublayer(f"{prefix}_{k}", conv))
                else:
                    path = []
                row.append(path)
            self._paths.append(row)

    def forward(self, branches):
        outputs = []
        for i, row in enumerate(self._paths):
            total = branches[i]
            size = paddle.shape(total)[2:]
            for j, path in enumerate(row):
                if j == i:
                    continue
                y = branches[j]
                for layer in path:
                    y = layer(y)
                if j > i:
                    y = resize_to(y, size, self.align_corners)
                total = total + y
            outputs.append(F.relu(total))
        return outputs


# === Residual blocks ===

class _Bottleneck(nn.Layer):
    """1x1 -> 3x3 -> 1x1 (x4 width) residual block of stage 1."""

    def __init__(self, in_channels, width, project_shortcut, has_se, padding):
        super().__init__()
        out_channels = width * BOTTLENECK_EXPANSION
        self.conv1 = ConvBNReLU(in_channels, width, 1, **_CONV)
        self.conv2 = ConvBNReLU(width, width, 3, padding=padding, **_CONV)
        self.conv3 = ConvBN(width, out_channels, 1, **_CONV)
        self.conv_down = (ConvBN(in_channels, out_channels, 1, **_CONV)
                          if project_shortcut else None)
        self.se = _SqueezeExcitation(out_channels) if has_se else None

    def forward(self, x):
        y = self.conv3(self.conv2(self.conv1(x)))
        if self.se is not None:
            y = self.se(y)
        shortcut = x if self.conv_down is None else self.conv_down(x)
        return F.relu(y + shortcut)


class _BasicBlock(nn.Layer):
    """Two 3x3 convolutions with an identity shortcut (stages 2-4)."""

    def __init__(self, channels, use_psa, has_se, padding):
        super().__init__()
        self.conv1 = ConvBNReLU(channels, channels, 3, padding=padding, **_CONV)
        self.deattn = _PolarizedSelfAttention(channels) if use_psa else None
        self.conv2 = ConvBN(channels, channels, 3, padding=padding, **_CONV)
        self.se = _SqueezeExcitation(channels) if has_se else None

    def forward(self, x):
        y = self.conv1(x)
        if self.deattn is not None:
            y = self.deattn(y)
        y = self.conv2(y)
        if self.se is not None:
            y = self.se(y)
        return F.relu(y + x)


class _SqueezeExcitation(nn.Layer):
    """Channel gating: global average pool, FC-ReLU-FC-sigmoid, rescale the input."""

    def __init__(self, channels):
        super().__init__()
        hidden = channels // SE_REDUCTION
        self.squeeze = nn.Linear(channels, hidden, weight_attr=_uniform_fan_in(channels))
        self.excitation = nn.Linear(hidden, channels, weight_attr=_uniform_fan_in(hidden))

    def forward(self, x):
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        gate = compat.sigmoid(self.excitation(F.relu(self.squeeze(pooled))))
        return x * gate.unsqueeze([2, 3])


class _PolarizedSelfAttention(nn.Layer):
    """Polarized self-attention, parallel layout: a channel gate plus a spatial gate.

    Both gates are computed from the input and applied to it; the two results are summed.
    """

    def __init__(self, channels):
        super().__init__()
        inner = channels // 2

        def conv1x1(cin, cout):
            return nn.Conv2D(cin, cout, 1, **_CONV)

        # Channel-only branch: a softmax over positions pools the values.
        self.conv_q_right = conv1x1(channels, 1)
        self.conv_v_right = conv1x1(channels, inner)
        self.conv_up = conv1x1(inner, channels)
        # Spatial-only branch: a globally pooled query scores every position.
        self.conv_q_left = conv1x1(channels, inner)
        self.conv_v_left = conv1x1(channels, inner)

    def forward(self, x):
        _, _, h, w = paddle.shape(x)
        # Explicit transpose and adaptive pooling, as PaddleSeg: transpose_y and mean
        # round differently, and the softmax-sharpened scores amplify that to ~1e-5.
        values = self.conv_v_right(x).flatten(2)                       # [N, C/2, HW]
        weights = F.softmax(self.conv_q_right(x).flatten(2), axis=2)   # [N, 1, HW]
        pooled = paddle.matmul(values, weights.transpose([0, 2, 1]))   # [N, C/2, 1]
        channel_gate = compat.sigmoid(self.conv_up(pooled.unsqueeze(-1)))   # [N, C, 1, 1]

        query = F.adaptive_avg_pool2d(self.conv_q_left(x), 1)          # [N, C/2, 1, 1]
        keys = self.conv_v_left(x).flatten(2)                          # [N, C/2, HW]
        scores = paddle.matmul(query.flatten(1).unsqueeze(1), keys)    # [N, 1, HW]
        spatial_gate = compat.sigmoid(F.softmax(scores, axis=2).reshape([-1, 1, h, w]))
        return x * spatial_gate + x * channel_gate


# === Initialisation ===

def _uniform_fan_in(fan_in):
    bound = 1.0 / math.sqrt(fan_in)
    return paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound))
