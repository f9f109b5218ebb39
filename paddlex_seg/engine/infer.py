"""Forward passes shared by prediction and evaluation.

Scores are mapped back to the input's size by ``transforms.restore_tensor_to_input``,
which undoes the eval transforms from the records they leave in ``trans_info``.
With a test-time augmentation (``paddlex_seg.aug``) each image's scores are averaged
over its views first; without one the images run in same-shape batches as always.
"""
import numpy as np
import paddle
import paddle.nn.functional as F

from ..aug import augmented_scores
from ..data.transforms import restore_tensor_to_input

__all__ = ["same_shape_runs", "forward_scores", "image_scores", "restore_tensor_to_input"]


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


def image_scores(net, images, aug=None):
    """Yield (index, scores (1, C, H, W) paddle tensor) for each transformed CHW image.

    Args:
        net (paddle.nn.Layer): in eval mode.
        images (list[np.ndarray]): transformed images, possibly of different sizes.
        aug (TestTimeAug|None): None runs same-shape batches, one forward pass each;
            otherwise every image is scored alone by ``aug.augmented_scores``, which
            hands the network at most ``aug.window_batch_size`` images at a time.
    """
    if aug is None:
        for indices, batch in same_shape_runs(images):
            scores = forward_scores(net, batch)
            for j, i in enumerate(indices):
                yield i, scores[j:j + 1]
        return

    def run(batch):
        return forward_scores(net, batch).numpy()

    for i, image in enumerate(images):
        yield i, paddle.to_tensor(augmented_scores(run, image, aug)[None])
