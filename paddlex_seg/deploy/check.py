"""The accuracy guard of ``backend='auto'``: measure every backend/precision on labelled images.

    from paddlex_seg.deploy import check
    figures = check(model_dir, eval_dataset)      # also written to model.yml Export: checks

For each backend installed here and each precision it can run for this export
(``paddlex_seg.deploy.backends``), the images of ``dataset`` are predicted and their
mIoU (0-100 points) computed against the labels; ``miou_loss`` is Paddle Inference
fp32's mIoU minus the choice's, and ``agreement`` the fraction of pixels whose label
equals Paddle fp32's. ``latency_ms`` is the median inference time of one image
(``repeats`` timed runs after a warm-up). ``Predictor(backend='auto')`` then takes
the fastest choice losing at most ``MAX_MIOU_LOSS`` points. ``export(...,
calibration_dataset=ds)`` runs this right after exporting.
"""
import os

import numpy as np
import yaml

from . import backends as _backends

__all__ = ["check"]


def check(model_dir, dataset, choices=None, repeats=5, threads=2, max_images=None):
    """Measure mIoU and latency of each backend/precision; record them in model.yml.

    Args:
        model_dir (str): an exported model directory.
        dataset (SegDataset): labelled images (read from their files; the recorded
            eval transforms are applied by the Predictor).
        choices (list[tuple]|None): (backend, precision) pairs; None: all installed
            and supported ones. Paddle fp32 (the reference) is always measured.
        repeats (int): timed runs of the first image per choice. Default: 5.
        threads (int): CPU threads for every backend. Default: 2.
        max_images (int|None): use at most this many images. Default: all.

    Returns:
        dict: ``{'backend/precision': {'miou', 'miou_loss', 'agreement', 'latency_ms'}}``.
    """
    from ..data.dataset import read_image, read_label
    from ..engine.metrics import confusion_matrix, metrics_from_confusion
    from .export import MODEL_YML, _write_yml
    from .predictor import Predictor, _read_exported_yml

    model_dir = os.fspath(model_dir)
    info = _read_exported_yml(model_dir)
    export = info["Export"]
    samples = list(getattr(dataset, "samples", None) or [])
    if not samples or any(len(s) < 2 or s[1] is None for s in samples):
        raise ValueError("check needs a labelled SegDataset (image and label per sample)")
    samples = samples[:max_images] if max_images else samples
    num_classes = int(info.get("num_classes") or len(info.get("labels") or []) or 2)
    if choices is None:
        choices = [(b, p) for b in _backends.available_backends()
                   for p in _backends.supported_precisions(b, model_dir, export)]
    reference = ("paddle", "int8" if export.get("model_status") == "Quantized" else "fp32")
    choices = [reference] + [tuple(c) for c in choices if tuple(c) != reference]
    images = [read_image(s[0]) for s in samples]
    labels = [read_label(s[1]) for s in samples]
    figures, ref_maps = {}, None
    for backend, precision in choices:
        predictor = Predictor(model_dir, backend=backend, precision=precision,
                              mkl_thread_num=threads, cpu_thread_num=threads)
        maps = [predictor.predict(image, aug=False)["label_map"] for image in images]
        times = []
        for _ in range(repeats + 1):
            predictor.predict(images[0], aug=False)
            times.append(predictor.timings["inference"])
        cm = sum(confusion_matrix(label, pred, num_classes) for label, pred in zip(labels, maps))
        miou = 100.0 * float(metrics_from_confusion(cm)["miou"])
        if ref_maps is None:
            ref_maps, ref_miou = maps, miou
        agreement = float(np.mean([(a == b).mean() for a, b in zip(maps, ref_maps)]))
        figures[f"{backend}/{precision}"] = {
            "miou": round(miou, 3), "miou_loss": round(ref_miou - miou, 3),
            "agreement": round(agreement, 5), "latency_ms": round(float(np.median(times[1:])), 3)}
    yml = os.path.join(model_dir, MODEL_YML)
    with open(yml, encoding="utf-8") as f:
        info = yaml.safe_load(f)
    info["Export"]["checks"] = figures
    info["Export"]["checks_images"] = len(images)
    _write_yml(yml, info)
    return figures
