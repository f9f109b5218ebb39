"""U-Net (Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015, arXiv:1505.04597).

A contracting path of double 3x3 convolutions and 2x2 max-pools, and an expanding path
that upsamples, concatenates the encoder map of the same resolution and convolves again.
Unlike the paper, convolutions are padded (and batch-normalised), so the output has the
input's size and no cropping is needed.
"""
import paddle
import paddle.nn as nn

from .layers import ConvBNReLU, check_positive_int, resize_to

__all__ = ["UNet"]

# Widths of PaddleSeg's UNet (and so of its published weights): the full-resolution
# double conv, then after each of the four 2x downsamplings.
ENCODER_CHANNELS = (64, 128, 256, 512, 512)
# Output widths of the four decoder stages, coarsest first.
DECODER_CHANNELS = (256, 128, 64, 64)


class UNet(nn.Layer):
    """U-Net encoder-decoder.

    Args:
        num_classes (int): number of classes predicted per pixel.
        align_corners (bool): passed to the bilinear upsampling. Default: False.
        use_deconv (bool): upsample with a learnt 2x2 stride-2 Conv2DTranspose instead of
            bilinear interpolation; the input's height and width must then be multiples
            of 16. Default: False.
        in_channels (int): channels of the input image. Default: 3.

    Forward returns ``[logit]``, a list holding one (N, num_classes, H, W) tensor at the
    input's size.
    """

    def __init__(self, num_classes, align_corners=False, use_deconv=False, in_channels=3):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_channels", in_channels)

        # === Layers === (attribute names are PaddleSeg's parameter keys)
        self.encode = _Encoder(in_channels, ENCODER_CHANNELS)
        self.decode = _Decoder(ENCODER_CHANNELS, DECODER_CHANNELS, align_corners, use_deconv)
        # PaddleSeg registers the classifier under two names, so its weight files hold
        # both "cls.*" and "conv.*"; one layer under both names keeps them loadable.
        self.cls = self.conv = nn.Conv2D(DECODER_CHANNELS[-1], num_classes, 3, padding=1)

    def forward(self, x):
        bottom, skips = self.encode(x)
        return [self.cls(self.decode(bottom, skips))]


class _Decoder(nn.Layer):
    """Four upsampling stages, each joined with the encoder map of the same resolution."""

    def __init__(self, encoder_channels, decoder_channels, align_corners, use_deconv):
        super().__init__()
        in_channels = encoder_channels[-1]
        stages = []
        for skip_channels, out_channels in zip(encoder_channels[-2::-1], decoder_channels):
            stages.append(_UpStage(in_channels, skip_channels, out_channels,
                                   align_corners, use_deconv))
            in_channels = out_channels
        self.up_sample_list = nn.LayerList(stages)

    def forward(self, x, skips):
        for stage, skip in zip(self.up_sample_list, reversed(skips)):
            x = stage(x, skip)
        return x


class _UpStage(nn.Layer):
    """Upsample 2x (bilinear to the skip's size, or a transposed conv halving the output
    width), concatenate [upsampled, skip], two 3x3 ConvBNReLUs."""

    def __init__(self, in_channels, skip_channels, out_channels, align_corners, use_deconv):
        super().__init__()
        self.align_corners = align_corners
        self.use_deconv = use_deconv
        if use_deconv:
            self.deconv = nn.Conv2DTranspose(in_channels, out_channels // 2, 2, stride=2)
            in_channels = out_channels // 2
        self.double_conv = nn.Sequential(*_double_conv(in_channels + skip_channels, out_channels))

    def forward(self, x, skip):
        if self.use_deconv:
            x = self.deconv(x)
        else:
            x = resize_to(x, paddle.shape(skip)[2:], self.align_corners)
        return self.double_conv(paddle.concat([x, skip], axis=1))


class _Encoder(nn.Layer):
    """A double conv at full resolution, then four (2x2 max-pool, double conv) stages.

    forward returns the coarsest map and the list of the four finer maps (finest first)
    that the decoder concatenates.
    """

    def __init__(self, in_channels, channels):
        super().__init__()
        self.double_conv = nn.Sequential(*_double_conv(in_channels, channels[0]))
        self.down_sample_list = nn.LayerList([
            nn.Sequential(nn.MaxPool2D(kernel_size=2, stride=2), *_double_conv(c_in, c_out))
            for c_in, c_out in zip(channels[:-1], channels[1:])
        ])

    def forward(self, x):
        x = self.double_conv(x)
        skips = []
        for down in self.down_sample_list:
            skips.append(x)
            x = down(x)
        return x, skips


def _double_conv(in_channels, out_channels):
    """The two 3x3 ConvBNReLUs of every U-Net stage, as a list."""
    return [ConvBNReLU(in_channels, out_channels, 3), ConvBNReLU(out_channels, out_channels, 3)]
