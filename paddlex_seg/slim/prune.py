"""Filter pruning of the segmentation networks, on PaddleSlim 2.6.

Filter pruning removes whole output channels of a convolution, and with them the
matching input channels of every layer that reads them. PaddleSlim finds these
*groups* by walking the traced program from each convolution weight (the first one
reached is the group's master) and computes which channels go with a criterion:
'l1_norm' (smallest mean absolute weight) or 'fpgm' (closest to the geometric median,
He et al., "Filter Pruning via Geometric Median for Deep Convolutional Neural Networks
Acceleration", CVPR 2019, arXiv:1811.00250).

PaddleSlim 2.6 cannot follow three operators our networks use. It has no worker for
``concat`` (it logs "Unsupported operator named concat" and drops every group whose
walk reaches one); it stops at ``reduce_mean`` without pruning what comes after it
(BiSeNetV2's context embedding would break); and in training mode it treats the Mask
output of ``dropout`` as a network output, which drops every group that reaches a
dropout. ``register_concat_support`` registers workers for the three; the concat one
places a producer's pruned channels at that producer's offset in the concatenated
tensor, so the consumer convolution loses exactly the matching input channels.

The groups are found with PaddleSlim's own walk and workers, with two changes made
here: the walk runs on an indexed copy of PaddleSlim's graph wrapper (which scans the
whole program at every step: hours on HRNet_W48, seconds indexed), and the concat
worker walks on from each part in a scope of its own, because PaddleSlim shares one
visited record between the walks of all groups and the walk from a concat's second
part would otherwise stop at the consumer the first part's walk already reached.

Groups are traced in training mode (auxiliary heads run only then, and their inputs
must shrink with the rest), at the caller's input shape. A group is prunable when its
master is an ordinary convolution (depthwise ones follow their producer), its walk
never reaches a network output (so no classifier, and no layer whose channels are
tied to the class count, is ever pruned), no other group claims the same channels,
and removing a few of its channels leaves the network runnable in training and
evaluation mode (checked once per network, all groups at once, bisecting on failure).

Prunable groups per network (num_classes=2; counts do not depend on the input size):
masters of prunable groups, against PaddleSlim 2.6 alone (its own walk, which also
keeps groups it cannot apply consistently, e.g. BiSeNetV2's context embedding).

===========================  =========  ===============  ====
network                      conv        PaddleSlim 2.6   here
                             weights     alone
===========================  =========  ===============  ====
UNet                           19          10               18
BiSeNetV2                      64          24               31
FastSCNN                       47          17               24
DeepLabV3P, ResNet50_vd        70          41               48
DeepLabV3P, ResNet18_vd        38          17               24
FCN, HRNet_W48 (and W18)      307         132              136
FCN, HRNet_W18_Small_V1        73          29               33
===========================  =========  ===============  ====

Every other convolution is a classifier, a depthwise convolution (pruned with its
producer) or a member of a group led by an earlier master (e.g. all convolutions
whose outputs meet in one residual sum, which is why HRNet has few masters: its
fuse layers add every branch into every other).

PaddleSlim's own ``PruningPlan.apply`` is not used: it sets the ``groups`` of a
depthwise convolution with a channel multiplier wrongly (BiSeNetV2's
DepthwiseConvBN(16, 96) pruned to 12 inputs gets groups=72, not 12) and it is slow.

Parameters are named as in ``net.state_dict()`` (``'head.conv.0._conv.weight'``),
which is stable across instances of a network, so ratios chosen on one network can be
re-applied to a fresh one to rebuild the pruned shapes. ``apply_pruning`` is
deterministic in shapes: with the same ratios every group loses the same number of
channels, whatever the weights.

A group of at least ``2 * CHANNEL_MULTIPLE`` channels always keeps a multiple of
``CHANNEL_MULTIPLE`` (8) of them; the ratio is rounded to the nearest such count
before the FLOPs are measured, so ``choose_ratios`` searches over the counts that
``apply_pruning`` will cut. The reason is deployment speed: oneDNN (Paddle Inference
on CPU) lays fp32 activations out in blocks of 8/16 channels and drops to a much
slower path otherwise. Measured with Paddle Inference 2.6.2 + oneDNN, 2 threads, a
stack of seven 3x3 convolutions at 256x256: 368 ms with 64 channels, 365 ms with 56,
1094 ms with 63 (64x64: 34, 36, 84 ms). A UNet pruned by 30 % of its FLOPs with
free channel counts (e.g. 63 kept of 64) ran slower than the float one (50 vs 44 ms
at 64x64, 650 vs 520 ms at 256x256); with the counts rounded it runs faster (33 ms and
383 ms), for the same 30 % of FLOPs.
"""
import contextlib
import copy
import hashlib
import io
import logging
import math
import numbers
import os
import pickle
import re
import tempfile
import warnings

import numpy as np
import paddle

from .. import compat

compat.import_paddleslim()  # before PaddleSlim's modules: it puts back a name Paddle 3 renamed
from paddleslim.core import GraphWrapper, VarWrapper, dygraph2program
from paddleslim.core.graph_wrapper import OpWrapper
from paddleslim.dygraph import FPGMFilterPruner, L1NormFilterPruner
from paddleslim.dygraph.prune.filter_pruner import Status
from paddleslim.dygraph.prune.pruner import Pruner
from paddleslim.dygraph.prune.pruning_plan import PruningMask, PruningPlan
from paddleslim.dygraph.prune.var_group import DygraphPruningCollections
from paddleslim.prune.collections import PruningCollection, PruningDetails
from paddleslim.prune.prune_worker import PRUNE_WORKER, PruneWorker, UnsupportOpError
from tqdm import tqdm

__all__ = ["CRITERIA", "DEFAULT_RATIOS", "register_concat_support", "prunable_params",
           "sensitivity", "save_sensitivities", "load_sensitivities", "choose_ratios",
           "apply_pruning", "flops"]

logger = logging.getLogger("paddlex_seg")

CRITERIA = ("l1_norm", "fpgm")
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
# A pruned group of at least 2 * CHANNEL_MULTIPLE channels keeps a multiple of this
# many: oneDNN's blocked fp32 layouts make other counts several times slower on CPU
# (see the module docstring for the measurement).
CHANNEL_MULTIPLE = 8
# The deepest pruning choose_ratios uses when the sensitivities do not reach the target.
MAX_RATIO = 0.9
# choose_ratios stops searching once the measured FLOPs reduction is this close.
_SEARCH_TOLERANCE = 0.005
# choose_ratios warns when it ends farther than this from the request.
_WARN_TOLERANCE = 0.02


def register_concat_support():
    """Register the pruning workers PaddleSlim 2.6 lacks for our networks.

    Adds ``concat``, ``reduce_mean`` and ``dropout`` to
    ``paddleslim.prune.prune_worker.PRUNE_WORKER``. Safe to call any number of times;
    an entry already present (e.g. one from a newer PaddleSlim) is kept.
    """
    registry = PRUNE_WORKER.module_dict
    for op_type, worker in _EXTRA_WORKERS.items():
        registry.setdefault(op_type, worker)


def prunable_params(net, input_shape, skip=None):
    """Names of the convolution weights whose filters can be pruned.

    Args:
        net (paddle.nn.Layer): the network (not changed).
        input_shape (list[int]): NCHW shape the network is traced with, e.g.
            [1, 3, 128, 128].
        skip (list[str]|None): names to leave out. Default: None.

    Returns:
        list[str]: ``state_dict`` names of the master weights of the prunable groups,
        in network order.
    """
    input_shape = _check_input_shape(input_shape)
    skip = _check_name_list(skip or [], "skip")
    _check_names(net, skip, "skip")
    session = _Session(net, input_shape, "l1_norm")
    return [name for name in session.prunable if name not in skip]


def sensitivity(net, eval_fn, input_shape, criterion="l1_norm", ratios=DEFAULT_RATIOS,
                params=None, progress=True):
    """Metric loss of pruning each layer alone at each ratio.

    The network is pruned in place, evaluated with ``eval_fn()`` and restored, one
    (layer, ratio) pair at a time. The loss is the relative drop of the metric,
    ``(base - pruned) / (base + 1e-3)``, as PaddleSlim computes it.

    Args:
        net (paddle.nn.Layer): the network ``eval_fn`` evaluates.
        eval_fn (callable): no arguments, returns the metric (e.g. mIoU) as a float.
        input_shape (list[int]): NCHW shape the network is traced with.
        criterion (str): 'l1_norm' or 'fpgm'. Default: 'l1_norm'.
        ratios (tuple[float]): pruning ratios to try, each in (0, 1).
            Default: DEFAULT_RATIOS (0.1 ... 0.8).
        params (list[str]|None): layers to analyse; None means all prunable ones.
        progress (bool): show a progress bar over (layer, ratio) pairs. Default: True.

    Returns:
        dict: ``{param_name: {ratio: loss}}``.
    """
    if not callable(eval_fn):
        raise ValueError(f"eval_fn must be callable with no arguments, got {eval_fn!r}")
    input_shape = _check_input_shape(input_shape)
    _check_criterion(criterion)
    ratios = _check_ratios(ratios)
    session = _Session(net, input_shape, criterion)
    params = session.prunable if params is None else _check_name_list(params, "params")
    session.check_prunable(params, "params")

    base = _metric(eval_fn)
    result = {name: {} for name in params}
    pairs = [(name, ratio) for name in params for ratio in ratios]
    for name, ratio in tqdm(pairs, desc="sensitivity", unit="prune", disable=not progress):
        if session.removed(name, ratio) == 0:
            result[name][ratio] = 0.0  # too few channels to remove any at this ratio
            continue
        with session.pruned({name: ratio}):
            pruned = _metric(eval_fn)
        result[name][ratio] = (base - pruned) / (base + 1e-3)
    return result


def save_sensitivities(sensitivities, path):
    """Write sensitivities to ``path`` (a pickled dict, e.g. ``model.sensi.data``).

    The file is written under a temporary name and renamed into place.
    """
    sensitivities = _check_sensitivities(sensitivities, "sensitivities")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".sensi-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as f:
            pickle.dump(sensitivities, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_sensitivities(path):
    """Read sensitivities written by ``save_sensitivities``.

    Only plain dicts of names and numbers are unpickled (as PaddleSlim's own
    ``sensitive`` writes them); any other object in the file is refused.

    Raises:
        ValueError: the file is missing, unreadable or not a sensitivities dict.
    """
    if not os.path.isfile(path):
        raise ValueError(f"sensitivities file {path!r} does not exist")
    try:
        with open(path, "rb") as f:
            data = _PlainUnpickler(f).load()
    except Exception as error:
        raise ValueError(f"sensitivities file {path!r} cannot be read: {error}") from None
    return _check_sensitivities(data, f"the content of {path!r}")


def choose_ratios(net, sensitivities, pruned_flops, input_shape, criterion="l1_norm"):
    """Per-layer ratios that remove ``pruned_flops`` of the network's FLOPs.

    A loss threshold is searched by bisection: each layer is pruned as deeply as its
    sensitivity curve allows under the threshold (interpolated between the measured
    ratios), and the FLOPs of the pruned network are measured with ``paddle.flops``
    on a copy. When one step of the threshold moves the FLOPs past the request (a
    group whose single channel weighs much, like an HRNet branch), the layers that
    moved are held and the search goes on with the others. When even the deepest
    measured ratios fall short, every ratio is pushed further towards ``MAX_RATIO``
    (with a warning); when the request still cannot be reached, the closest
    reachable reduction is returned with a warning.

    Args:
        net (paddle.nn.Layer): the network (not changed).
        sensitivities (dict): ``{param_name: {ratio: loss}}`` from ``sensitivity``.
        pruned_flops (float): fraction of FLOPs to remove, in (0, 1).
        input_shape (list[int]): NCHW shape for tracing and FLOPs.
        criterion (str): 'l1_norm' or 'fpgm'. Default: 'l1_norm'.

    Returns:
        tuple: (ratios, achieved): ``{param_name: ratio}`` with every ratio an exact
        number of channels over the layer's width, and the FLOPs fraction removed.
    """
    _check_fraction(pruned_flops)
    input_shape = _check_input_shape(input_shape)
    _check_criterion(criterion)
    sensitivities = _check_sensitivities(sensitivities, "sensitivities")
    work = copy.deepcopy(net)
    session = _Session(work, input_shape, criterion)
    session.check_prunable(list(sensitivities), "sensitivities")
    base = flops(work, input_shape)

    search = _RatioSearch(session, sensitivities, base)
    ratios, got, u = search.run(pruned_flops)

    if abs(got - pruned_flops) > _WARN_TOLERANCE:
        logger.warning(f"Pruning cannot remove {pruned_flops:.1%} of this network's FLOPs "
                       f"through the {len(sensitivities)} layers analysed; the closest "
                       f"reachable is {got:.1%}, which is used.")
    elif u > 1:
        deepest = max(max(points) for points in sensitivities.values())
        logger.warning(f"Removing {pruned_flops:.1%} of the FLOPs needs pruning deeper than "
                       f"the sensitivities were measured (ratios up to {deepest}); the "
                       f"accuracy loss may be larger than they predict.")
    return ratios, got


def apply_pruning(net, ratios, input_shape, criterion="l1_norm"):
    """Prune ``net`` in place with the given per-layer ratios.

    Each named group loses ``round(channels * ratio)`` output channels (at most all
    but one), chosen by the criterion; the layers reading them shrink to match. A
    group of at least ``2 * CHANNEL_MULTIPLE`` channels keeps the nearest multiple of
    ``CHANNEL_MULTIPLE`` (at least one multiple) instead. The
    shapes depend only on the ratios, so the same call on a fresh network gives the
    same ``state_dict`` shapes.

    Args:
        net (paddle.nn.Layer): the network to prune.
        ratios (dict): ``{param_name: ratio}``, names from ``prunable_params``.
        input_shape (list[int]): NCHW shape for tracing and FLOPs.
        criterion (str): 'l1_norm' or 'fpgm'. Default: 'l1_norm'.

    Returns:
        tuple: (flops_before, flops_after), from ``paddle.flops`` at ``input_shape``.

    Raises:
        ValueError: an unknown or unprunable name, a ratio outside (0, 1), or a ratio
            too small to remove a single channel of its layer.
    """
    input_shape = _check_input_shape(input_shape)
    _check_criterion(criterion)
    if not isinstance(ratios, dict) or not ratios:
        raise ValueError(f"ratios must be a non-empty dict {{param_name: ratio}}, got {ratios!r}")
    for name, ratio in ratios.items():
        _check_fraction(ratio, f"ratios[{name!r}]")
    before = flops(net, input_shape)
    session = _Session(net, input_shape, criterion)
    session.check_prunable(list(ratios), "ratios")
    for name, ratio in ratios.items():
        if session.removed(name, ratio) == 0:
            raise ValueError(f"ratios[{name!r}]={ratio} removes no channel of that layer "
                             f"({session.channels[name]} channels); use at least "
                             f"{session.smallest_ratio(name):.4f} or leave it out")
    session.commit(ratios)
    return before, flops(net, input_shape)


def flops(net, input_shape):
    """FLOPs of ``net`` in evaluation mode at ``input_shape``, from ``paddle.flops``."""
    input_shape = _check_input_shape(input_shape)

    def count():
        # paddle.flops prints a summary, and warns about its own NumPy use for every layer.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            total = compat.flops(net, input_shape)
        # It leaves its counters as buffers on layers the eval forward did not run (the
        # auxiliary heads); they would go into state_dict and the saved weights.
        for layer in net.sublayers(include_self=True):
            for name in ("total_ops", "total_params"):
                layer._buffers.pop(name, None)
        return total
    return _by_shape("flops", net, input_shape, count)


# FLOPs, and which groups can be pruned without breaking the network, follow from the
# layers' configuration and parameter shapes and the input shape, not from the weights.
# Each answer costs forward passes at the input shape (seconds for a large network) and one
# analyze_sensitivity -> prune -> load_model asks the same questions many times over.
_SHAPE_ANSWERS = {}
_SHAPE_ANSWERS_KEPT = 256


def _by_shape(question, net, input_shape, compute, *extra):
    described = (question, type(net).__module__, type(net).__qualname__, repr(net),
                 tuple((name, tuple(p.shape)) for name, p in net.named_parameters()),
                 tuple(input_shape)) + extra
    key = hashlib.sha256(repr(described).encode()).hexdigest()  # a large net's repr is ~100 kB
    if key not in _SHAPE_ANSWERS:
        if len(_SHAPE_ANSWERS) >= _SHAPE_ANSWERS_KEPT:
            _SHAPE_ANSWERS.pop(next(iter(_SHAPE_ANSWERS)))  # the oldest
        _SHAPE_ANSWERS[key] = compute()
    return _SHAPE_ANSWERS[key]


# ---------------------------------------------------------------------------
# Workers for the operators PaddleSlim 2.6 cannot follow
# ---------------------------------------------------------------------------

class _ConcatWorker(PruneWorker):
    """``concat``: a part's channels sit at that part's offset in the output."""

    def _prune(self, var, pruned_axis, transforms):
        parts = self.op.inputs("X")
        out = self.op.outputs("Out")[0]
        if self.op.inputs("AxisTensor"):
            raise UnsupportOpError("concat along an axis given as a tensor")
        axis = self.op.attr("axis")
        axis = axis + len(out.shape()) if axis < 0 else axis
        names = [part.name() for part in parts]
        if len(set(names)) != len(names):
            raise UnsupportOpError("concat of the same tensor twice")

        if pruned_axis != axis:  # every part shares the pruned axis unchanged
            for other in parts + [out]:
                if other != var:
                    self._visit_and_search(other, pruned_axis, transforms)
            return
        sizes = [part.shape()[axis] for part in parts]
        if any(size is None or size < 0 for size in sizes):
            raise UnsupportOpError("concat of parts with unknown sizes on its axis")
        starts = np.cumsum([0] + sizes).tolist()
        if var == out:  # the output's mask splits into one slice per part
            for part, start, size in zip(parts, starts, sizes):
                piece = {"src_start": start, "src_end": start + size, "target_start": 0,
                         "target_end": size, "target_len": size}
                self._visit_and_search(part, axis, transforms + [piece])
        else:  # a part's mask lands at its offset; the other channels stay
            i = names.index(var.name())
            place = {"src_start": 0, "src_end": sizes[i], "target_start": starts[i],
                     "target_end": starts[i] + sizes[i], "target_len": starts[-1]}
            # PaddleSlim shares one visited record between the walks of all groups:
            # without a scope of its own, the walk from the second part would find the
            # consumers already visited by the first and silently stop there.
            shared = self.visited
            self.visited = _ScopedVisits(shared, f"{self.op.idx()}:{i}")
            try:
                self._visit_and_search(out, axis, transforms + [place])
            finally:
                self.visited = shared


class _ReduceWorker(PruneWorker):
    """``reduce_mean`` over other axes (global pooling) keeps the channels."""

    def _prune(self, var, pruned_axis, transforms):
        x = self.op.inputs("X")[0]
        out = self.op.outputs("Out")[0]
        if self.op.attr("reduce_all"):
            raise UnsupportOpError("reduce_mean over all axes")
        rank = len(x.shape())
        dims = sorted(d + rank if d < 0 else d for d in self.op.attr("dim"))
        keep_dim = self.op.attr("keep_dim")
        if var == x:
            if pruned_axis in dims:
                raise UnsupportOpError("reduce_mean over the pruned axis")
            shift = 0 if keep_dim else sum(d < pruned_axis for d in dims)
            self._visit_and_search(out, pruned_axis - shift, transforms)
        else:
            axis = pruned_axis
            if not keep_dim:
                for d in dims:
                    axis += d <= axis
            self._visit_and_search(x, axis, transforms)


class _DropoutWorker(PruneWorker):
    """``dropout``: X and Out only; the Mask of training mode is no network output."""

    def _prune(self, var, pruned_axis, transforms):
        x = self.op.inputs("X")[0]
        out = self.op.outputs("Out")[0]
        if var == x:
            self._visit_and_search(out, pruned_axis, transforms)
        elif var == out:
            self._visit_and_search(x, pruned_axis, transforms)


_EXTRA_WORKERS = {"concat": _ConcatWorker, "reduce_mean": _ReduceWorker,
                  "dropout": _DropoutWorker}


# ---------------------------------------------------------------------------
# PaddleSlim's pruner on an indexed graph
# ---------------------------------------------------------------------------

class _IndexedVar(VarWrapper):
    def inputs(self):
        return list(self._graph.producers.get(self._var.name, ()))

    def outputs(self):
        return list(self._graph.consumers.get(self._var.name, ()))


class _IndexedGraph(GraphWrapper):
    """GraphWrapper with its variable -> operator look-ups indexed.

    PaddleSlim's own scans the whole program at every step of its walk, which takes
    minutes on HRNet_W18_Small_V1 and hours on HRNet_W48.
    """

    def __init__(self, program):
        super().__init__(program)
        self._wrapped = {}
        self._ops = [OpWrapper(op, self) for block in program.blocks for op in block.ops]
        self.producers, self.consumers = {}, {}
        for op in self._ops:
            for name in dict.fromkeys(op._op.output_arg_names):
                self.producers.setdefault(name, []).append(op)
            for name in dict.fromkeys(op._op.input_arg_names):
                self.consumers.setdefault(name, []).append(op)

    def ops(self):
        return list(self._ops)

    def var(self, name):
        if name not in self._wrapped:
            block = next((b for b in self.program.blocks if b.has_var(name)), None)
            self._wrapped[name] = None if block is None else _IndexedVar(block.var(name), self)
        return self._wrapped[name]

    def vars(self):
        return [self.var(v.name) for v in self.program.list_vars()]


class _Groups(DygraphPruningCollections):
    """PaddleSlim's pruning groups of a traced network.

    The walk is PaddleSlim's (its workers, from each convolution weight in turn, with
    one record of visited operators shared by all walks so that a weight reached from
    an earlier one is not a master of its own), run on ``_IndexedGraph`` with a
    visited record that prints briefly (PaddleSlim formats it into a debug message at
    every step) and is rolled back cheaply when a walk fails.
    """

    def __init__(self, model, input_shape):  # pylint: disable=super-init-not-called
        try:
            # Paddle 3: PaddleSlim reads old-IR programs only, so trace into one.
            with compat.legacy_program_ir():
                program = dygraph2program(model, inputs=list(input_shape), dtypes=["float32"])
        finally:
            if not paddle.in_dynamic_mode():  # PaddleSlim leaves it on when tracing fails
                paddle.disable_static()
        graph = _IndexedGraph(program)
        outputs = [v.name() for v in graph.vars() if not v.outputs()]
        visited = _Visited()
        self._collections, self.failures = [], []
        for param in model.parameters():
            var = graph.var(param.name)
            if len(param.shape) != 4 or var is None or not var.outputs():
                continue
            op = var.outputs()[0]
            worker_class = PRUNE_WORKER.get(op.type())
            if worker_class is None:
                continue
            found = []
            worker = worker_class(op, found, visited, True)
            worker.skip_vars = outputs
            mark = visited.mark()
            try:
                worker.prune(var, pruned_axis=0, transforms=[])
            except UnsupportOpError as error:
                visited.roll_back(mark)
                self.failures.append((param.name, str(error)))
                continue
            if found:
                group = PruningCollection(master={"name": param.name, "axis": 0})
                for found_var, axis, transforms, found_op in found:
                    group.add(PruningDetails(found_var, axis, transforms, found_op))
                self._collections.append(group)
        values = {p.name: p.numpy() for p in model.parameters()}
        for group in self._collections:
            group.values = values


class _Visited(dict):
    """PaddleSlim's {axis: {visit key: True}} record, cheap to print and to roll back."""

    def __repr__(self):
        return f"<{sum(len(v) for v in self.values())} visits>"

    __str__ = __repr__

    def mark(self):
        return {axis: len(keys) for axis, keys in self.items()}

    def roll_back(self, mark):
        for axis in list(self):
            keep = mark.get(axis, 0)
            if keep == 0:
                del self[axis]
            else:  # dicts keep insertion order: the walk's visits come last
                for key in list(self[axis])[keep:]:
                    del self[axis][key]


class _ScopedVisits:
    """A view of the visited record in which every visit key carries a scope.

    The concat worker walks on from each part with its own scope, so that a consumer
    already visited from another part (at another offset) is visited again.
    """

    def __init__(self, visited, tag):
        if isinstance(visited, _ScopedVisits):
            self.base, self.scope = visited.base, visited.scope | {tag}
        else:
            self.base, self.scope = visited, frozenset([tag])
        self.suffix = "@" + ",".join(sorted(self.scope))

    def __contains__(self, axis):
        return axis in self.base

    def __setitem__(self, axis, value):
        self.base.setdefault(axis, {})

    def __getitem__(self, axis):
        return _ScopedKeys(self.base.setdefault(axis, {}), self.suffix)

    def __repr__(self):
        return f"<visits in scope {self.suffix}>"


class _ScopedKeys:
    def __init__(self, keys, suffix):
        self.keys, self.suffix = keys, suffix

    def __contains__(self, key):
        return key + self.suffix in self.keys

    def __setitem__(self, key, value):
        self.keys[key + self.suffix] = value


class _FastSetup:
    """What FilterPruner.__init__ sets up, with the groups from ``_Groups``."""

    def __init__(self, model, input_shape):  # pylint: disable=super-init-not-called
        Pruner.__init__(self, model, list(input_shape))
        self.num_head = -1
        self.prune_type = "conv"
        self.skip_leaves = True
        self._status = Status()
        self.collections = _Groups(model, input_shape)
        self.skip_vars = [p.name for layer in model.sublayers()
                          if isinstance(layer, paddle.nn.Conv2DTranspose)
                          for p in layer.parameters()]


class _L1NormPruner(_FastSetup, L1NormFilterPruner):
    pass


class _FPGMPruner(_FastSetup, FPGMFilterPruner):
    pass


_PRUNERS = {"l1_norm": _L1NormPruner, "fpgm": _FPGMPruner}


class _Session:
    """The pruning groups of one network and the plans made from them.

    Names in and out are ``state_dict`` names; PaddleSlim works on ``param.name``.
    """

    def __init__(self, net, input_shape, criterion):
        register_concat_support()
        self.net = net
        self.input_shape = list(input_shape)
        self.key_of = {p.name: key for key, p in net.named_parameters()}
        self.param_of = {key: p for key, p in net.named_parameters()}
        with _modes(net, training=True), _paddleslim_logs():
            self.pruner = _PRUNERS[criterion](net, self.input_shape)
        self.unsupported = sorted({m.group(1) for m in (
            re.search(r"Unsupported operator named (\w+)", error)
            for _, error in self.pruner.collections.failures) if m})
        if self.unsupported:
            logger.debug(f"PaddleSlim cannot follow these operators: {self.unsupported}")

        convs = {layer.weight.name: layer for layer in net.sublayers()
                 if isinstance(layer, paddle.nn.Conv2D)}
        self.groups = {}
        for group in self.pruner.collections:
            layer = convs.get(group.master_name)
            # Depthwise and grouped convolutions are pruned with their producer.
            if layer is not None and layer._groups == 1 and group.master_axis == 0:
                self.groups[self.key_of[group.master_name]] = group
        self.channels = {key: self.param_of[key].shape[0] for key in self.groups}
        self._plans = {}
        self._prunable = None

    # --- which groups can be pruned --------------------------------------------------
    @property
    def prunable(self):
        if self._prunable is None:
            overlapping = self._overlapping()
            candidates = [key for key in self.groups
                          if self.channels[key] > 1 and key not in overlapping]
            self._prunable = _by_shape("runnable", self.net, self.input_shape,
                                       lambda: self._runnable(candidates), tuple(candidates))
        return list(self._prunable)

    def check_prunable(self, names, argument):
        _check_names(self.net, names, argument)
        allowed = set(self.prunable)
        wrong = [name for name in names if name not in allowed]
        if wrong:
            raise ValueError(f"{argument} names layers that cannot be pruned: {wrong[:5]}"
                             f"{' ...' if len(wrong) > 5 else ''}; prunable_params() lists "
                             f"the {len(allowed)} that can")

    def _overlapping(self):
        """Masters whose group claims channels another group already claims."""
        owner, clashes = {}, set()
        for key, group in self.groups.items():
            claims = {}
            for detail in group.all_pruning_details():
                mask = np.zeros(self.channels[key], dtype="int32")
                for transform in detail.transform:
                    mask = self.pruner._transform_mask(mask, transform)
                claimed = claims.setdefault((detail.name, detail.axis), set())
                claimed.update(np.flatnonzero(np.asarray(mask) == 0).tolist())
            if any(owner.get(place, set()) & channels for place, channels in claims.items()):
                clashes.add(key)
                logger.debug(f"not prunable: {key} shares channels with another group")
                continue
            for place, channels in claims.items():
                owner.setdefault(place, set()).update(channels)
        return clashes

    def _runnable(self, candidates):
        """The candidates whose pruning keeps the network running (group testing)."""
        shapes = self._output_shapes()

        def works(subset):
            ratios = {key: max(self.smallest_ratio(key), (self.channels[key] // 8)
                               / self.channels[key]) for key in subset}
            try:
                with self.pruned(ratios):
                    shrunk = all(self.param_of[key].shape[0]
                                 == self.channels[key] - self.removed(key, ratio)
                                 for key, ratio in ratios.items())
                    return shrunk and self._output_shapes() == shapes
            except Exception as error:  # a shape mismatch deep inside Paddle
                logger.debug(f"pruning {len(subset)} group(s) breaks the network: {error}")
                return False

        def search(subset):
            if not subset or works(subset):
                return subset
            if len(subset) == 1:
                logger.debug(f"not prunable: pruning {subset[0]} breaks the network")
                return []
            half = len(subset) // 2
            return search(subset[:half]) + search(subset[half:])

        return search(candidates)

    def _output_shapes(self):
        x = paddle.zeros(self.input_shape)
        shapes = []
        with paddle.no_grad():
            for training in (True, False):
                with _modes(self.net, training=training, frozen_norms=True):
                    shapes.append([list(y.shape) for y in self.net(x)])
        return shapes

    # --- plans ----------------------------------------------------------------------
    def removed(self, key, ratio):
        """Channels removed from the group of ``key`` at ``ratio``: a whole number, and
        for a group of at least 2 * CHANNEL_MULTIPLE channels one that keeps a
        multiple of CHANNEL_MULTIPLE (the nearest, halves rounded up)."""
        width = self.channels[key]
        kept = width - int(round(width * ratio))
        if width >= 2 * CHANNEL_MULTIPLE:
            blocks = math.floor(kept / CHANNEL_MULTIPLE + 0.5)
            kept = CHANNEL_MULTIPLE * max(1, blocks)
        return max(0, min(width - 1, width - kept))

    def smallest_ratio(self, key):
        """The smallest ratio of the form count / width that removes a channel."""
        width = self.channels[key]
        return next(count / width for count in range(1, width)
                    if self.removed(key, count / width) > 0)

    def snap(self, ratios):
        """Ratios as exact channel counts over the width; layers losing none dropped."""
        snapped = {}
        for key, ratio in ratios.items():
            count = self.removed(key, ratio)
            if count > 0:
                snapped[key] = count / self.channels[key]
        return snapped

    def plan(self, ratios):
        total = PruningPlan(self.net.full_name())
        for key, ratio in ratios.items():
            count = self.removed(key, ratio)
            if count == 0:
                continue
            if (key, count) not in self._plans:
                with _paddleslim_logs():
                    self._plans[key, count] = self.pruner.prune_var(
                        self.groups[key].master_name, 0, count / self.channels[key], apply=None)
            # Fresh masks: PruningPlan.add intersects the stored ones in place.
            for name, masks in self._plans[key, count].masks.items():
                for m in masks:
                    total.add(name, PruningMask(m.dims, np.array(m.mask), m._pruned_ratio, m._op))
        return total

    @contextlib.contextmanager
    def pruned(self, ratios):
        """Prune in place for the duration of the block, then restore."""
        undo = []
        try:
            self._cut(self.plan(ratios), undo)
            yield
        finally:
            _restore(undo)

    def commit(self, ratios):
        """Prune in place for good (all or nothing)."""
        undo = []
        try:
            self._cut(self.plan(ratios), undo)
            for key, ratio in ratios.items():
                expected = self.channels[key] - self.removed(key, ratio)
                if self.param_of[key].shape[0] != expected:
                    raise RuntimeError(f"pruning {key} left {self.param_of[key].shape[0]} "
                                       f"channels, expected {expected}")
        except BaseException:
            _restore(undo)
            raise
        for param, _, layer, _ in undo:
            param.clear_gradient()  # a gradient of the old shape cannot be applied
            _sync_widths(layer)

    def _cut(self, plan, undo):
        """Remove the masked channels of every parameter in ``plan``, appending to
        ``undo`` what restores them.

        PaddleSlim's PruningPlan.apply does the same with a Python call per weight
        row (minutes on HRNet_W48) and miscounts the groups of a depthwise
        convolution with a channel multiplier (DepthwiseConvBN(16, 96)).
        """
        for layer in self.net.sublayers(include_self=True):
            for param in layer.parameters(include_sublayers=False):
                masks = plan.masks.get(param.name)
                if not masks:
                    continue
                value = param.numpy()
                grouped = (isinstance(layer, paddle.nn.Conv2D) and param is layer.weight
                           and layer._groups > 1)
                undo.append((param, value, layer, layer._groups if grouped else None))
                cut = value
                for mask in masks:
                    keep = np.flatnonzero(np.asarray(mask.mask))
                    cut = np.take(cut, keep, axis=mask.dims)
                    if grouped and mask.dims == 0:
                        per_group = value.shape[0] // layer._groups
                        if len(keep) % per_group:
                            raise RuntimeError(f"pruning leaves {param.name} with {len(keep)} "
                                               f"filters, not a multiple of {per_group}")
                        layer._groups = len(keep) // per_group
                _set_tensor(param, cut)


class _RatioSearch:
    """Bisection for ``choose_ratios`` over one parameter ``u`` of the pruning depth.

    u in [-1, 0] scales the ratios of the lowest loss threshold down to nothing;
    u in [0, 1] raises the threshold from the lowest to the highest measured loss;
    u in [1, 2] goes from the deepest measured ratios towards ``MAX_RATIO``.
    The FLOPs reduction grows with u, in channel-sized steps.
    """

    _ROUNDS = 4

    def __init__(self, session, sensitivities, base_flops):
        self.session, self.base = session, base_flops
        self.curves = {name: _LossCurve(points) for name, points in sensitivities.items()}
        losses = [loss for points in sensitivities.values() for loss in points.values()]
        self.low_t, self.high_t = min(0.0, min(losses)), max(0.0, max(losses))
        self.held = {}
        self.tried = {}  # sorted ratio items -> (ratios, achieved, u)

    def ratios_at(self, u):
        ratios = {}
        for name, curve in self.curves.items():
            if u <= 0:
                ratio = (1 + u) * curve.ratio_at(self.low_t)
            elif u <= 1:
                ratio = curve.ratio_at(self.low_t + u * (self.high_t - self.low_t))
            else:
                deepest = curve.ratio_at(self.high_t)
                ratio = deepest + (u - 1) * (MAX_RATIO - deepest)
            ratios[name] = self.held.get(name, ratio)
        return self.session.snap(ratios)

    def achieved_at(self, u):
        ratios = self.ratios_at(u)
        key = tuple(sorted(ratios.items()))
        if key not in self.tried:
            with self.session.pruned(ratios):
                got = 1.0 - flops(self.session.net, self.session.input_shape) / self.base
            self.tried[key] = (ratios, got, u)
        return self.tried[key][1]

    def run(self, target):
        """(ratios, achieved, u) of the closest pruning found."""
        low, high = -1.0, 2.0
        for _ in range(self._ROUNDS):
            while high - low > 1e-4:
                u = (low + high) / 2
                got = self.achieved_at(u)
                if abs(got - target) <= _SEARCH_TOLERANCE:
                    return self.tried[tuple(sorted(self.ratios_at(u).items()))]
                low, high = (u, high) if got < target else (low, u)
            if self.achieved_at(high) < target:  # out of reach
                break
            below, above = self.ratios_at(low), self.ratios_at(high)
            moved = {name for name in set(below) | set(above)
                     if below.get(name, 0.0) != above.get(name, 0.0)}
            if not moved or len(self.held) + len(moved) >= len(self.curves):
                break
            self.held.update({name: below.get(name, 0.0) for name in moved})
            high = 2.0
        found = [entry for entry in self.tried.values() if entry[0]]
        if not found:
            raise ValueError("no layer in sensitivities is wide enough to lose a channel")
        return min(found, key=lambda entry: abs(entry[1] - target))


class _LossCurve:
    """Piecewise-linear loss against ratio through (0, 0) and the measured points."""

    def __init__(self, points):
        pairs = sorted((float(r), float(l)) for r, l in points.items())
        self.ratios = [0.0] + [r for r, _ in pairs]
        self.losses = [0.0] + [l for _, l in pairs]

    def ratio_at(self, threshold):
        """The deepest ratio whose loss stays under ``threshold`` (PaddleSlim's rule,
        with the curve starting at no pruning and no loss)."""
        for i in range(len(self.ratios) - 1, -1, -1):
            if self.losses[i] <= threshold:
                if i == len(self.ratios) - 1:
                    return self.ratios[i]
                r0, r1 = self.ratios[i], self.ratios[i + 1]
                l0, l1 = self.losses[i], self.losses[i + 1]
                return r0 + (threshold - l0) * (r1 - r0) / (l1 - l0)
        return 0.0


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def _modes(net, training, frozen_norms=False):
    """Put ``net`` in training or evaluation mode for a block, then restore every
    sublayer's own mode. ``frozen_norms`` keeps batch norms in evaluation mode so
    that a forward pass does not move their running statistics."""
    saved = [(layer, layer.training) for layer in net.sublayers(include_self=True)]
    net.train() if training else net.eval()
    if frozen_norms:
        for layer in net.sublayers():
            if isinstance(layer, paddle.nn.layer.norm._BatchNormBase):
                layer.eval()
    try:
        yield
    finally:
        for layer, was_training in saved:
            layer.training = was_training


@contextlib.contextmanager
def _paddleslim_logs():
    """Collect PaddleSlim's log records instead of printing them."""
    records = []

    class _Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    collect = _Collect()
    saved = []
    for name, log in list(logging.root.manager.loggerDict.items()):
        if name.startswith("paddleslim") and isinstance(log, logging.Logger):
            saved.append((log, log.handlers, log.propagate))
            log.handlers, log.propagate = [collect], False
    try:
        yield records
    finally:
        for log, handlers, propagate in saved:
            log.handlers, log.propagate = handlers, propagate


def _restore(undo):
    for param, value, layer, groups in reversed(undo):
        _set_tensor(param, value)
        if groups is not None:
            layer._groups = groups
    undo.clear()


def _sync_widths(layer):
    """Make a pruned layer's recorded widths (shown by its repr) match its weights."""
    if isinstance(layer, paddle.nn.Conv2DTranspose):
        layer._in_channels = layer.weight.shape[0]
        layer._out_channels = layer.weight.shape[1] * layer._groups
    elif isinstance(layer, paddle.nn.Conv2D):
        layer._out_channels = layer.weight.shape[0]
        layer._in_channels = layer.weight.shape[1] * layer._groups
    elif isinstance(layer, paddle.nn.layer.norm._BatchNormBase):
        layer._num_features = layer._mean.shape[0]


def _set_tensor(param, value):
    """Replace a parameter's value, whatever its shape (set_value keeps the shape)."""
    param.value().get_tensor().set(np.ascontiguousarray(value), paddle.CPUPlace()
                                    if param.place.is_cpu_place() else param.place)


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles builtins and NumPy scalars only, never arbitrary classes."""

    _ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it holds a {module}.{name} object, not a plain dict")


def _metric(eval_fn):
    value = eval_fn()
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"eval_fn must return a number (e.g. mIoU), got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"eval_fn returned {value}, not a finite number")
    return value


def _check_input_shape(input_shape):
    if (not isinstance(input_shape, (list, tuple)) or len(input_shape) != 4
            or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0
                       for d in input_shape)):
        raise ValueError(f"input_shape must be 4 positive ints [N, C, H, W], got {input_shape!r}")
    return [int(d) for d in input_shape]


def _check_criterion(criterion):
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")


def _check_fraction(value, name="pruned_flops"):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0 < float(value) < 1):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")


def _check_ratios(ratios):
    if not isinstance(ratios, (list, tuple)) or not ratios:
        raise ValueError(f"ratios must be a non-empty list of numbers in (0, 1), got {ratios!r}")
    for ratio in ratios:
        _check_fraction(ratio, "each of ratios")
    return sorted({round(float(r), 6) for r in ratios})


def _check_name_list(names, argument):
    if not isinstance(names, (list, tuple, set)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{argument} must be a list of parameter names, got {names!r}")
    return list(names)


def _check_names(net, names, argument):
    known = {key for key, p in net.named_parameters()}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"{argument} names parameters the network does not have: "
                         f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}")


def _check_sensitivities(data, what):
    problem = None
    if not isinstance(data, dict) or not data:
        problem = "is not a non-empty dict {param_name: {ratio: loss}}"
    else:
        for name, points in data.items():
            if not isinstance(name, str) or not isinstance(points, dict) or not points:
                problem = f"has entry {name!r} that is not a name with a {{ratio: loss}} dict"
            elif not all(isinstance(r, numbers.Real) and 0 < r < 1 for r in points):
                problem = f"has ratios for {name!r} outside (0, 1): {sorted(points)}"
            elif not all(isinstance(l, numbers.Real) and math.isfinite(l)
                         for l in points.values()):
                problem = f"has losses for {name!r} that are not finite numbers"
            if problem:
                break
    if problem:
        raise ValueError(f"{what} {problem}")
    return {name: {float(r): float(l) for r, l in points.items()} for name, points in data.items()}
