"""paddlex_seg.visualize: overlay, palette, file naming, legend, errors."""
import os

import cv2
import numpy as np
import pytest

import paddlex_seg as seg
from paddlex_seg.visualize import ARRAY_IMAGE_NAME, get_color_map, visualize


def sample(h=20, w=30, seed=0):
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 256, (h, w, 3)).astype("uint8")
    label_map = np.zeros((h, w), np.uint8)
    label_map[:, w // 3:] = 1
    label_map[h // 2:, 2 * w // 3:] = 2
    return image, {"label_map": label_map, "score_map": np.zeros((h, w, 3), np.float32)}


def test_exported_at_package_level():
    assert seg.visualize is visualize


def test_palette_is_the_voc_colour_map_in_bgr():
    palette = get_color_map(256)
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    # PASCAL VOC (RGB): 0 black, 1 (128,0,0), 2 (0,128,0), 3 (128,128,0), 4 (0,0,128), 8 (64,0,0)
    expected_rgb = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0),
                    4: (0, 0, 128), 8: (64, 0, 0), 15: (192, 128, 128)}
    for class_id, rgb in expected_rgb.items():
        assert tuple(palette[class_id]) == rgb[::-1], class_id
    assert len({tuple(c) for c in palette}) == 256, "every class gets its own colour"
    np.testing.assert_array_equal(get_color_map(10), palette[:10])


def test_weight_zero_is_the_mask_and_one_is_the_image():
    image, result = sample()
    palette = get_color_map()
    mask = visualize(image, result, weight=0.0, save_dir=None)
    np.testing.assert_array_equal(mask, palette[result["label_map"]])
    np.testing.assert_array_equal(visualize(image, result, weight=1.0, save_dir=None), image)
    blend = visualize(image, result, weight=0.6, save_dir=None).astype(float)
    expected = 0.6 * image + 0.4 * palette[result["label_map"]]
    assert np.abs(blend - expected).max() <= 1.0  # uint8 rounding


def test_writes_visualize_file_name_for_a_path(tmp_path):
    image, result = sample()
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), image)
    written = visualize(str(path), result, save_dir=str(tmp_path / "vis"))
    assert written == str(tmp_path / "vis" / "visualize_street.png")
    np.testing.assert_array_equal(cv2.imread(written), visualize(image, result, save_dir=None))


def test_jpeg_name_is_kept_and_array_gets_image_png(tmp_path):
    image, result = sample()
    cv2.imwrite(str(tmp_path / "a.jpg"), image)
    assert visualize(str(tmp_path / "a.jpg"), result, save_dir=str(tmp_path)).endswith("visualize_a.jpg")
    written = visualize(image, result, save_dir=str(tmp_path))
    assert os.path.basename(written) == "visualize_" + ARRAY_IMAGE_NAME == "visualize_image.png"
    assert cv2.imread(written).shape == image.shape


def test_custom_colours_are_bgr_per_class():
    image, result = sample()
    out = visualize(image, result, weight=0.0, save_dir=None, color=[255, 255, 255, 0, 0, 255])
    assert tuple(out[0, 0]) == (255, 255, 255)          # class 0: first triple
    assert tuple(out[0, -1]) == (0, 0, 255)             # class 1: red in BGR
    assert tuple(out[-1, -1]) == tuple(get_color_map()[2])  # class 2 keeps the palette
    triples = visualize(image, result, weight=0.0, save_dir=None, color=[[255, 255, 255], [0, 0, 255]])
    np.testing.assert_array_equal(out, triples)


def test_legend_adds_a_panel_with_the_classes_present():
    image, result = sample(h=80, w=60)
    plain = visualize(image, result, save_dir=None)
    with_legend = visualize(image, result, save_dir=None, legend=True,
                            labels=["background", "road", "car"])
    assert with_legend.shape[0] == plain.shape[0] and with_legend.shape[1] > plain.shape[1]
    np.testing.assert_array_equal(with_legend[:, :plain.shape[1]], plain)
    panel = with_legend[:, plain.shape[1]:]
    palette = get_color_map()
    for class_id in (0, 1, 2):  # a swatch of each present class's colour
        assert (panel == palette[class_id]).all(axis=2).sum() >= 100, class_id
    assert (panel == palette[3]).all(axis=2).sum() == 0
    longer = visualize(image, result, save_dir=None, legend=True,
                       labels=["background", "a much longer road name", "car"])
    assert longer.shape[1] > with_legend.shape[1], "the panel fits the names"


def test_a_label_map_alone_is_accepted():
    image, result = sample()
    np.testing.assert_array_equal(visualize(image, result["label_map"], save_dir=None),
                                  visualize(image, result, save_dir=None))


@pytest.mark.parametrize("kwargs, words", [
    ({"weight": 1.5}, "weight"),
    ({"color": [1, 2]}, "color"),
    ({"color": [0, 0, 300]}, "color"),
    ({"result": {"label_map": np.zeros((5, 5), np.uint8)}}, "label map is 5x5"),
    ({"result": {"score_map": 1}}, "label_map"),
    ({"image": "/no/such.png"}, "cannot be read"),
    ({"image": 3}, "path or a numpy array"),
])
def test_bad_arguments_are_clear_errors(kwargs, words):
    image, result = sample()
    args = {"image": image, "result": result, "save_dir": None}
    args.update(kwargs)
    with pytest.raises(ValueError, match=words):
        visualize(**args)
