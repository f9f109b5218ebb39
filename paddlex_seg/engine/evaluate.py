"""The evaluation routine shared by train, evaluate, prune fine-tuning and QAT.

Predictions are mapped back to each label's original size (the eval transforms are
undone from their ``trans_info``), so metrics never depend on the eval resolution.
"""
import copy

import numpy as np
import paddle

from ..data.dataset import SampleError, SegDataError, collate, raise_for_error_batch

from .infer import image_scores, restore_tensor_to_input
from .metrics import confusion_matrix, metrics_from_confusion


class _EvalSamples(paddle.io.Dataset):
    """(transformed CHW image, original label, trans_info) for each sample of a SegDataset.

    Like ``SegDataset.__getitem__`` it never raises: a failure travels as a
    ``SampleError`` to ``_collate_eval`` and is raised by ``unpack_batch`` in the caller
    (the DataLoader would swallow an exception, see ``data/dataset.py``).
    """

    def __init__(self, dataset, transforms):
        self.raw = copy.copy(dataset)
        self.raw.transforms = None  # labels stay at their original size
        self.transforms = transforms

    def __len__(self):
        return len(self.raw)

    def __getitem__(self, index):
        image_path, label_path = self.raw.samples[index]
        try:
            image, label = self.raw.read_sample(index)
            if label is None:
                raise SegDataError(f"{image_path}: evaluation needs a label for every image")
            sample = self.transforms({"image": image})
        except Exception as error:  # the DataLoader would hide it
            return SampleError(index, f"{type(error).__name__}: {error} (image {image_path})")
        return sample["image"], label, sample["trans_info"]


def _collate_eval(samples):
    errors = [s for s in samples if isinstance(s, SampleError)]
    if errors:
        return collate(errors)
    # Images may differ in size: keep lists, ``same_shape_runs`` batches equal shapes.
    return [list(field) for field in zip(*samples)]


def evaluate_net(net, dataset, num_classes, transforms, batch_size=1, num_workers=0, aug=None):
    """Run ``net`` over a labelled dataset and return (metrics, confusion matrix).

    Args:
        net (paddle.nn.Layer): returns a list of logits; evaluated in eval mode,
            its previous mode is restored afterwards.
        dataset (SegDataset): images with labels.
        num_classes (int): C.
        transforms (Compose): eval transforms applied to the images only.
        batch_size (int): images per forward pass; images whose transformed sizes
            differ are run in separate passes.
        num_workers (int): DataLoader workers reading and transforming images.
        aug (TestTimeAug|None): test-time augmentation (``paddlex_seg.aug``); with one,
            each image is scored alone, in at most ``aug.window_batch_size`` windows
            per forward pass. None: plain batched prediction.
    """
    was_training = net.training
    net.eval()
    loader = paddle.io.DataLoader(
        _EvalSamples(dataset, transforms), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, collate_fn=_collate_eval, return_list=True)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    try:
        for batch in loader:
            raise_for_error_batch(batch)
            images, labels, infos = ([x.numpy() if hasattr(x, "numpy") else x for x in field]
                                     for field in batch)
            for i, scores in image_scores(net, images, aug):
                restored = restore_tensor_to_input(scores, infos[i])
                pred = paddle.argmax(restored[0], axis=0).numpy()
                cm += confusion_matrix(labels[i], pred, num_classes)
    finally:
        if was_training:
            net.train()
    return metrics_from_confusion(cm), cm
