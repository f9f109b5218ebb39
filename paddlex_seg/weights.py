"""Pretrained weights: a table of published files, a download cache, tolerant loading.

``PRETRAINED_WEIGHTS`` maps ``(model_key, dataset)`` to the address of a weights
file published by PaddleSeg, the same files PaddleX 2.x downloads for
``pretrain_weights='CITYSCAPES' | 'PascalVOC' | 'IMAGENET'``. Model keys are the
model class name, followed by the backbone for DeepLabV3P and by the width for
HRNet: ``DeepLabV3P_ResNet50_vd``, ``DeepLabV3P_ResNet101_vd``, ``HRNet_W18``,
``HRNet_W48``, ``BiSeNetV2``, ``UNet``, ``FastSCNN``.

Checksums: the project does not know the sha256 of the published files (they were
never published alongside them), so every entry has ``'sha256': None``. For those
entries a download is checked only for completeness (the byte count must match
the server's Content-Length) and, when loaded, for being a readable ``.pdparams``;
it is NOT verified against a known digest. Fill in a digest to get full
verification; entries with a digest are checked on download and on every use.

Files are cached under :func:`cache_dir`, one folder per entry
(``<cache>/<model_key>_<dataset>/``). A file placed there by hand is used as is,
which is how an offline machine gets pretrained weights; the error raised when a
download fails prints the exact path.
"""
import glob
import logging
import os

import numpy as np
import paddle

from .utils.download import (ARCHIVE_SUFFIXES, DownloadError, download,
                             download_and_decompress, sha256sum)

__all__ = [
    "PRETRAINED_WEIGHTS",
    "PretrainedWeightsUnavailable",
    "available_pretrain_weights",
    "cache_dir",
    "load_pretrained_weights",
    "resolve_pretrain_weights",
]

logger = logging.getLogger("paddlex_seg")

_SEG = "https://bj.bcebos.com/paddleseg/dygraph"


def _entry(url, sha256=None):
    return {"url": url, "sha256": sha256}


# sha256 is None everywhere: the digests are unknown to us (see the module docstring).
PRETRAINED_WEIGHTS = {
    # DeepLabV3+: whole-network weights (Cityscapes, VOC) or an ImageNet backbone.
    ("DeepLabV3P_ResNet50_vd", "CITYSCAPES"): _entry(
        f"{_SEG}/cityscapes/deeplabv3p_resnet50_os8_cityscapes_1024x512_80k/model.pdparams"),
    ("DeepLabV3P_ResNet101_vd", "CITYSCAPES"): _entry(
        f"{_SEG}/cityscapes/deeplabv3p_resnet101_os8_cityscapes_769x769_80k/model.pdparams"),
    ("DeepLabV3P_ResNet50_vd", "PascalVOC"): _entry(
        f"{_SEG}/pascal_voc12/deeplabv3p_resnet50_os8_voc12aug_512x512_40k/model.pdparams"),
    ("DeepLabV3P_ResNet101_vd", "PascalVOC"): _entry(
        f"{_SEG}/pascal_voc12/deeplabv3p_resnet101_os8_voc12aug_512x512_40k/model.pdparams"),
    # Backbone-only archives (<name>/model.pdparams inside, keys without 'backbone.').
    ("DeepLabV3P_ResNet50_vd", "IMAGENET"): _entry(f"{_SEG}/resnet50_vd_ssld_v2.tar.gz"),
    ("DeepLabV3P_ResNet101_vd", "IMAGENET"): _entry(f"{_SEG}/resnet101_vd_ssld.tar.gz"),
    # HRNet (FCN head) at widths 18 and 48.
    ("HRNet_W18", "CITYSCAPES"): _entry(
        f"{_SEG}/cityscapes/fcn_hrnetw18_cityscapes_1024x512_80k/model.pdparams"),
    ("HRNet_W48", "CITYSCAPES"): _entry(
        f"{_SEG}/cityscapes/fcn_hrnetw48_cityscapes_1024x512_80k/model.pdparams"),
    ("HRNet_W18", "PascalVOC"): _entry(
        f"{_SEG}/pascal_voc12/fcn_hrnetw18_voc12aug_512x512_40k/model.pdparams"),
    ("HRNet_W48", "PascalVOC"): _entry(
        f"{_SEG}/pascal_voc12/fcn_hrnetw48_voc12aug_512x512_40k/model.pdparams"),
    # Real-time and encoder-decoder networks: Cityscapes only.
    ("BiSeNetV2", "CITYSCAPES"): _entry(
        f"{_SEG}/cityscapes/bisenet_cityscapes_1024x1024_160k/model.pdparams"),
    ("UNet", "CITYSCAPES"): _entry(
        f"{_SEG}/cityscapes/unet_cityscapes_1024x512_160k/model.pdparams"),
    ("FastSCNN", "CITYSCAPES"): _entry(
        f"{_SEG}/cityscapes/fastscnn_cityscapes_1024x1024_160k/model.pdparams"),
}

# Prefixes a weights file may carry that the network does not, or the reverse:
# backbone-only files lack 'backbone.'; some wrappers save the network as 'net.'.
_ADDABLE_PREFIXES = ("backbone.",)


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights could not be downloaded (typically: no network)."""


def cache_dir():
    """The folder where downloaded weights are kept.

    Returns:
        str: ``$PADDLEX_SEG_HOME`` when that variable is set and not empty, else
        ``~/.cache/paddlex_seg/weights``. The folder is created on first download.
    """
    home = os.environ.get("PADDLEX_SEG_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    return os.path.join(os.path.expanduser("~"), ".cache", "paddlex_seg", "weights")


def available_pretrain_weights(model_key):
    """Dataset names with published weights for ``model_key``, in table order."""
    return [dataset for key, dataset in PRETRAINED_WEIGHTS if key == model_key]


def resolve_pretrain_weights(model_key, pretrain_weights, allowed):
    """Turn a ``pretrain_weights`` argument into a local ``.pdparams`` path.

    Args:
        model_key (str): the table key of the model, e.g. ``'DeepLabV3P_ResNet50_vd'``.
        pretrain_weights (str or None): None (train from scratch); a path to a
            ``.pdparams`` file, or to a folder holding ``model.pdparams`` (a saved
            model); or a dataset name among ``allowed``, matched case-insensitively
            (``'cityscapes'`` means ``'CITYSCAPES'``).
        allowed (Sequence[str]): the dataset names this model accepts.

    Returns:
        str or None: path of a local ``.pdparams`` file, or None.

    Raises:
        ValueError: a path that does not exist or is not a ``.pdparams`` file, a
            name not in ``allowed`` (the message lists them), or a name missing
            from the table.
        PretrainedWeightsUnavailable: the download failed; the message names the
            URL, the path where the file can be placed by hand, and that
            ``pretrain_weights=None`` trains from scratch.
    """
    if pretrain_weights is None:
        return None
    if not isinstance(pretrain_weights, (str, os.PathLike)):
        raise ValueError(
            f"pretrain_weights={pretrain_weights!r} must be None, a dataset name "
            f"({', '.join(map(repr, allowed))}) or a path to a .pdparams file")
    text = os.fspath(pretrain_weights)
    dataset = _match_name(text, allowed)
    if dataset is None:
        looks_like_path = text.lower().endswith(".pdparams") or "/" in text or os.sep in text
        if looks_like_path or os.path.exists(text):
            return _local_weights(text)
        raise ValueError(
            f"pretrain_weights={text!r} is neither an existing .pdparams file nor one of "
            f"the names allowed for {model_key}: {', '.join(map(repr, allowed))} "
            f"(case-insensitive), or None to train from scratch")
    entry = PRETRAINED_WEIGHTS.get((model_key, dataset))
    if entry is None:
        known = available_pretrain_weights(model_key)
        raise ValueError(
            f"no published {dataset!r} weights for model {model_key!r}; the table has "
            f"{', '.join(map(repr, known)) if known else 'none for this model'}")
    return _fetch(model_key, dataset, entry["url"], entry.get("sha256"))


def load_pretrained_weights(net, path):
    """Copy the parameters of a ``.pdparams`` file into ``net`` where they fit.

    A parameter is set when the file has the same key with the same shape. Others
    are skipped and listed in a warning on the ``'paddlex_seg'`` logger: typically
    the classifier when ``num_classes`` differs from the pretraining dataset, and
    the head when the file holds a backbone only.

    One simple prefix difference is handled: if adding ``'backbone.'`` to every key
    of the file, or removing a first component shared by all its keys (e.g.
    ``'net.'``), matches more of the network's keys, that renaming is used. This
    is what lets a backbone-only ImageNet file load into a whole network.

    Args:
        net (paddle.nn.Layer): the network to fill in place.
        path (str): the ``.pdparams`` file.

    Returns:
        tuple: ``(loaded_keys, skipped)``: ``loaded_keys`` is the list of the
        network's keys that were set; ``skipped`` is a list of ``(key, reason)``
        for the network's keys that were not (missing from the file, or another
        shape).

    Raises:
        ValueError: the file does not exist or is not a readable ``.pdparams``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"pretrained weights file {path} does not exist")
    try:
        state = paddle.load(path, return_numpy=True)
    except Exception as exc:  # paddle.load raises several types for a bad file
        raise ValueError(f"{path} is not a valid .pdparams file ({exc})") from exc
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise ValueError(
            f"{path} is not a valid .pdparams file: expected a dict of parameter "
            f"arrays, found {type(state).__name__}")

    own = net.state_dict()
    state, renaming = _align_prefix(state, set(own))
    loaded, skipped = [], []
    for key, param in own.items():
        if key not in state:
            skipped.append((key, "missing from the file"))
            continue
        value = np.asarray(state[key])
        if list(value.shape) != list(param.shape):
            skipped.append(
                (key, f"shape {list(value.shape)} in the file, {list(param.shape)} in the network"))
            continue
        param.set_value(paddle.to_tensor(value).astype(param.dtype))
        loaded.append(key)

    name = type(net).__name__
    note = f" (keys renamed: {renaming})" if renaming else ""
    logger.info("Loaded %d/%d parameters of %s from %s%s", len(loaded), len(own), name, path, note)
    if skipped:
        logger.warning("%d parameters of %s were not loaded from %s: %s", len(skipped), name,
                       path, _list_skipped(skipped))
    return loaded, skipped


# ------------------------------------------------------------------------- helpers


def _match_name(text, allowed):
    """The entry of ``allowed`` equal to ``text`` ignoring case, else None."""
    for name in allowed:
        if name.lower() == text.lower():
            return name
    return None


def _local_weights(text):
    """Check a user-given path: a .pdparams file, or a saved-model folder holding one."""
    if os.path.isdir(text):
        inside = os.path.join(text, "model.pdparams")
        if os.path.isfile(inside):
            return inside
        raise ValueError(f"pretrain_weights={text!r} is a folder without a model.pdparams file")
    if not os.path.isfile(text):
        raise ValueError(f"pretrain_weights={text!r}: no such file")
    if not text.lower().endswith(".pdparams"):
        raise ValueError(f"pretrain_weights={text!r} is not a .pdparams file")
    return text


def _fetch(model_key, dataset, url, sha256):
    """Return the cached file for one table entry, downloading it if needed."""
    folder = os.path.join(cache_dir(), f"{model_key}_{dataset}")
    file_name = url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    hand_path = os.path.join(folder, file_name)
    is_archive = file_name.lower().endswith(ARCHIVE_SUFFIXES)
    try:
        if is_archive:
            # download_and_decompress also checks an archive placed by hand.
            return _find_pdparams(download_and_decompress(url, folder, sha256=sha256), url)
        if not os.path.isfile(hand_path):
            download(url, hand_path, sha256=sha256)
            return hand_path
    except DownloadError as exc:
        raise PretrainedWeightsUnavailable(
            f"could not download the {dataset!r} pretrained weights of {model_key} from "
            f"{url} ({exc.reason}). On an offline machine, download that file elsewhere "
            f"and place it at {hand_path}, or pass pretrain_weights=None to train from "
            f"scratch.") from exc
    if sha256 is not None:
        # A file placed by hand never went through download()'s check.
        actual = sha256sum(hand_path)
        if actual != sha256.lower():
            raise PretrainedWeightsUnavailable(
                f"{hand_path} does not match the published sha256 of {url} (expected "
                f"{sha256.lower()}, got {actual}); delete it to download it again, or pass "
                f"pretrain_weights=None to train from scratch.")
    return hand_path


def _find_pdparams(extracted, url):
    """The weights file inside an extracted archive (``model.pdparams`` preferred)."""
    if os.path.isfile(extracted):
        return extracted
    preferred = os.path.join(extracted, "model.pdparams")
    if os.path.isfile(preferred):
        return preferred
    found = sorted(glob.glob(os.path.join(extracted, "**", "*.pdparams"), recursive=True))
    if len(found) != 1:
        raise PretrainedWeightsUnavailable(
            f"the archive from {url}, extracted to {extracted}, holds "
            f"{len(found)} .pdparams files; expected exactly one")
    return found[0]


def _align_prefix(state, own_keys):
    """Rename the file's keys by one prefix if that matches more network keys.

    Returns the (possibly renamed) state and a short description of the renaming
    (empty when the keys are used as they are). Ties keep the original keys.
    """
    best, best_note = state, ""
    best_hits = len(own_keys.intersection(state))
    candidates = [({prefix + k: v for k, v in state.items()}, f"added {prefix!r}")
                  for prefix in _ADDABLE_PREFIXES]
    heads = {k.split(".", 1)[0] for k in state}
    if len(heads) == 1 and all("." in k for k in state):
        head = heads.pop()
        candidates.append(({k.split(".", 1)[1]: v for k, v in state.items()},
                           f"removed {head + '.'!r}"))
    for renamed, note in candidates:
        hits = len(own_keys.intersection(renamed))
        if hits > best_hits:
            best, best_note, best_hits = renamed, note, hits
    return best, best_note


def _list_skipped(skipped, limit=30):
    shown = "; ".join(f"{key} ({reason})" for key, reason in skipped[:limit])
    more = len(skipped) - limit
    return shown + (f"; ... and {more} more" if more > 0 else "")
