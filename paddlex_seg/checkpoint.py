"""Saved model directories: ``model.yml`` + ``model.pdparams`` (+ ``model.pdopt``).

A directory is written under a temporary name beside its final one and renamed into
place, so a killed process never leaves a half-written checkpoint under the final
name. When a directory is replaced (``best_model``), the old one is first renamed to
``<name>.old`` and removed after the swap; ``read_model_yml`` falls back to it if a
crash happened between the two renames.
"""
import os
import shutil
import uuid

import paddle
import yaml

MODEL_YML = "model.yml"
MODEL_PARAMS = "model.pdparams"
OPTIMIZER_STATE = "model.pdopt"


class ModelDirError(ValueError):
    """A model directory is missing, incomplete or unreadable."""


def write_model_dir(path, info, net_state, optimizer_state=None):
    """Atomically write a model directory.

    Args:
        path (str): final directory.
        info (dict): written to model.yml (plain Python types only).
        net_state (dict): network state dict, written to model.pdparams.
        optimizer_state (dict|None): optimizer state, written to model.pdopt.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        paddle.save(net_state, os.path.join(tmp, MODEL_PARAMS))
        if optimizer_state is not None:
            paddle.save(optimizer_state, os.path.join(tmp, OPTIMIZER_STATE))
        with open(os.path.join(tmp, MODEL_YML), "w", encoding="utf-8") as f:
            yaml.safe_dump(info, f, sort_keys=False, allow_unicode=True)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _replace_dir(src, dst):
    old = dst + ".old"
    if os.path.exists(dst):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def resolve_model_dir(path):
    """The directory to read: ``path``, or ``path.old`` left by an interrupted swap."""
    if os.path.isfile(os.path.join(path, MODEL_YML)):
        return path
    if os.path.isfile(os.path.join(path + ".old", MODEL_YML)):
        return path + ".old"
    if not os.path.exists(path):
        raise ModelDirError(f"model directory {path!r} does not exist")
    raise ModelDirError(f"{path!r} is not a model directory: it has no {MODEL_YML}")


def read_model_yml(path):
    """The parsed model.yml of a model directory, with clear errors."""
    path = resolve_model_dir(path)
    yml = os.path.join(path, MODEL_YML)
    try:
        with open(yml, encoding="utf-8") as f:
            info = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ModelDirError(f"{yml} is not valid YAML: {e}") from None
    if not isinstance(info, dict) or "Model" not in info:
        raise ModelDirError(f"{yml} does not describe a paddlex_seg model (no 'Model' entry)")
    return info


def read_state(path, name=MODEL_PARAMS):
    """Load ``name`` from a model directory with a clear error when missing or corrupt."""
    file = os.path.join(resolve_model_dir(path), name)
    if not os.path.isfile(file):
        raise ModelDirError(f"{file} is missing")
    try:
        return paddle.load(file)
    except Exception as e:  # paddle raises assorted types for truncated files
        raise ModelDirError(f"{file} cannot be read ({type(e).__name__}: {e})") from None
