"""Forward passes shared by prediction and evaluation.

Scores are mapped back to the input's size by ``transforms.restore_tensor_to_input``,
which undoes the eval transforms from the records they leave in ``trans_info``.
"""
import numpy as np
import paddle
import paddle.nn.functional as F

from ..data.transforms import restore_tensor_to_input

__all__ = ["same_shape_runs", "forward_scores", "restore_tensor_to_input"]


def same_shape_runs(images):
    """Group images (CHW arrays) by shape: yields (indices, stacked float32 batch)."""
    groups = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    for indices in groups.values():
        yield indices, np.stack([images[i] for i in indices]).astype("float32")


@paddle.no_grad()
def forward_scores(net, batch):
    """Softmax probabilities (N, C, H, W) of the main logit for a float32 NCHW batch."""
    logits = net(paddle.to_tensor(batch))
    return F.softmax(logits[0], axis=1)
