"""paddlex_seg.weights: the table, the cache, resolving names and tolerant loading.

Downloads go to a local HTTP server on 127.0.0.1 (FileServer from test_download.py);
the table is redirected with monkeypatch.setitem, the cache with PADDLEX_SEG_HOME.
"""
import io
import logging
import os
import re

import numpy as np
import paddle
import pytest

from paddlex_seg import weights
from paddlex_seg.weights import (PRETRAINED_WEIGHTS, PretrainedWeightsUnavailable, cache_dir,
                                 load_pretrained_weights, resolve_pretrain_weights)
from test_download import make_tar, sha
from test_download import dead_url, server  # noqa: F401  pytest fixtures

ALLOWED = ("CITYSCAPES", "PascalVOC", "IMAGENET")


class TinyBackbone(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.bn = paddle.nn.BatchNorm2D(8)

    def forward(self, x):
        return self.bn(self.conv(x))


class TinyNet(paddle.nn.Layer):
    def __init__(self, num_classes):
        super().__init__()
        self.backbone = TinyBackbone()
        self.cls = paddle.nn.Conv2D(8, num_classes, 1)

    def forward(self, x):
        return [self.cls(self.backbone(x))]


def randomize(net, seed):
    rng = np.random.RandomState(seed)
    for value in net.state_dict().values():
        value.set_value(rng.uniform(-1, 1, value.shape).astype("float32"))
    return net


def pdparams_bytes(state):
    buf = io.BytesIO()
    paddle.save(state, buf)
    return buf.getvalue()


@pytest.fixture
def home(tmp_path, monkeypatch):
    root = tmp_path / "weights_home"
    monkeypatch.setenv("PADDLEX_SEG_HOME", str(root))
    return root


@pytest.fixture
def log_records():
    """Records of the 'paddlex_seg' logger (which may not propagate to the root)."""
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("paddlex_seg")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


# ------------------------------------------------------------------------- table


def test_table_covers_every_documented_choice():
    expected = {("BiSeNetV2", "CITYSCAPES"), ("UNet", "CITYSCAPES"), ("FastSCNN", "CITYSCAPES")}
    for backbone in ("ResNet50_vd", "ResNet101_vd"):
        expected |= {(f"DeepLabV3P_{backbone}", d) for d in ALLOWED}
    for width in (18, 48):
        expected |= {(f"HRNet_W{width}", d) for d in ("CITYSCAPES", "PascalVOC")}
    assert set(PRETRAINED_WEIGHTS) == expected
    for key, entry in PRETRAINED_WEIGHTS.items():
        assert re.fullmatch(r"https://bj\.bcebos\.com/paddleseg/dygraph/\S+"
                            r"(/model\.pdparams|\.tar\.gz)", entry["url"]), (key, entry)
        assert entry["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
    assert weights.available_pretrain_weights("HRNet_W48") == ["CITYSCAPES", "PascalVOC"]


def test_cache_dir_default_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv("PADDLEX_SEG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == os.path.join(str(tmp_path), ".cache", "paddlex_seg", "weights")
    monkeypatch.setenv("PADDLEX_SEG_HOME", str(tmp_path / "elsewhere"))
    assert cache_dir() == str(tmp_path / "elsewhere")


# ---------------------------------------------------------- resolve: argument errors


def test_none_means_from_scratch():
    assert resolve_pretrain_weights("UNet", None, ["CITYSCAPES"]) is None


def test_local_paths(tmp_path):
    file_path = tmp_path / "my.pdparams"
    file_path.write_bytes(pdparams_bytes(TinyNet(2).state_dict()))
    assert resolve_pretrain_weights("UNet", str(file_path), ["CITYSCAPES"]) == str(file_path)
    saved = tmp_path / "best_model"
    saved.mkdir()
    (saved / "model.pdparams").write_bytes(b"x")
    assert resolve_pretrain_weights("UNet", str(saved), ["CITYSCAPES"]) == \
        str(saved / "model.pdparams")


@pytest.mark.parametrize("value,pattern", [
    ("output/missing/model.pdparams", r"'output/missing/model.pdparams': no such file"),
    ("missing.pdparams", r"'missing.pdparams': no such file"),
    ("COCO", r"'COCO'.*'CITYSCAPES', 'PascalVOC', 'IMAGENET'"),
    ("IMAGENET", r"'IMAGENET'.*allowed for HRNet_W18: 'CITYSCAPES', 'PascalVOC'"),
    (3, r"pretrain_weights=3 must be None"),
])
def test_bad_arguments(value, pattern):
    allowed = ALLOWED if value in ("COCO", 3) else ("CITYSCAPES", "PascalVOC")
    with pytest.raises(ValueError, match=pattern):
        resolve_pretrain_weights("HRNet_W18", value, allowed)


def test_allowed_name_missing_from_table():
    with pytest.raises(ValueError, match="no published 'IMAGENET' weights for model 'UNet'"):
        resolve_pretrain_weights("UNet", "IMAGENET", ALLOWED)


# -------------------------------------------------------------- resolve: downloads


def test_download_once_into_cache_case_insensitive(server, home, monkeypatch):
    data = pdparams_bytes(TinyNet(3).state_dict())
    server.files["cityscapes/tiny/model.pdparams"] = data
    monkeypatch.setitem(PRETRAINED_WEIGHTS, ("TinyNet", "CITYSCAPES"),
                        {"url": server.url("cityscapes/tiny/model.pdparams"), "sha256": sha(data)})
    path = resolve_pretrain_weights("TinyNet", "cityscapes", ALLOWED)
    assert path == str(home / "TinyNet_CITYSCAPES" / "model.pdparams")
    assert open(path, "rb").read() == data
    assert resolve_pretrain_weights("TinyNet", "CITYSCAPES", ALLOWED) == path
    assert len(server.log) == 1, "a cached file is not downloaded again"


def test_corrupt_download_rejected(server, home, monkeypatch):
    good = pdparams_bytes(TinyNet(3).state_dict())
    server.files["model.pdparams"] = good[:-10] + b"0123456789"
    monkeypatch.setitem(PRETRAINED_WEIGHTS, ("TinyNet", "PascalVOC"),
                        {"url": server.url("model.pdparams"), "sha256": sha(good)})
    with pytest.raises(PretrainedWeightsUnavailable, match=f"sha256 mismatch: expected {sha(good)}"):
        resolve_pretrain_weights("TinyNet", "PascalVOC", ALLOWED)
    assert os.listdir(home / "TinyNet_PascalVOC") == []


def test_corrupt_file_placed_by_hand_rejected(home, monkeypatch, dead_url):
    good = pdparams_bytes(TinyNet(3).state_dict())
    monkeypatch.setitem(PRETRAINED_WEIGHTS, ("TinyNet", "PascalVOC"),
                        {"url": dead_url, "sha256": sha(good)})
    folder = home / "TinyNet_PascalVOC"
    folder.mkdir(parents=True)
    (folder / "model.pdparams").write_bytes(b"truncated")
    with pytest.raises(PretrainedWeightsUnavailable, match="does not match the published sha256"):
        resolve_pretrain_weights("TinyNet", "PascalVOC", ALLOWED)


def test_archive_entry_extracted(server, home, monkeypatch):
    data = pdparams_bytes(TinyBackbone().state_dict())
    archive = make_tar([("tiny_ssld/model.pdparams", data)])
    server.files["tiny_ssld.tar.gz"] = archive
    monkeypatch.setitem(PRETRAINED_WEIGHTS, ("TinyNet", "IMAGENET"),
                        {"url": server.url("tiny_ssld.tar.gz"), "sha256": sha(archive)})
    path = resolve_pretrain_weights("TinyNet", "ImageNet", ALLOWED)
    assert path == str(home / "TinyNet_IMAGENET" / "tiny_ssld" / "model.pdparams")
    assert open(path, "rb").read() == data
    assert resolve_pretrain_weights("TinyNet", "IMAGENET", ALLOWED) == path
    assert len(server.log) == 1


def test_offline_message_then_file_placed_by_hand(dead_url, home, monkeypatch):
    monkeypatch.setitem(PRETRAINED_WEIGHTS, ("TinyNet", "CITYSCAPES"),
                        {"url": dead_url, "sha256": None})
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        resolve_pretrain_weights("TinyNet", "CITYSCAPES", ALLOWED)
    msg = str(err.value)
    by_hand = home / "TinyNet_CITYSCAPES" / "model.pdparams"
    assert "\n" not in msg
    assert dead_url in msg and str(by_hand) in msg and "pretrain_weights=None" in msg
    assert not by_hand.exists()

    by_hand.write_bytes(pdparams_bytes(TinyNet(3).state_dict()))
    assert resolve_pretrain_weights("TinyNet", "CITYSCAPES", ALLOWED) == str(by_hand)


def test_offline_archive_message_names_archive_path(dead_url, home, monkeypatch):
    url = dead_url.rsplit("/", 2)[0] + "/resnet50_vd_ssld_v2.tar.gz"
    monkeypatch.setitem(PRETRAINED_WEIGHTS, ("TinyNet", "IMAGENET"), {"url": url, "sha256": None})
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        resolve_pretrain_weights("TinyNet", "IMAGENET", ALLOWED)
    assert str(home / "TinyNet_IMAGENET" / "resnet50_vd_ssld_v2.tar.gz") in str(err.value)


# ------------------------------------------------------------------------ loading


def test_load_skips_classifier_of_another_shape(tmp_path, log_records):
    source = randomize(TinyNet(num_classes=19), seed=1)
    path = tmp_path / "city.pdparams"
    paddle.save(source.state_dict(), str(path))
    target = randomize(TinyNet(num_classes=2), seed=2)

    loaded, skipped = load_pretrained_weights(target, str(path))

    assert sorted(loaded) == sorted(k for k in target.state_dict() if k.startswith("backbone."))
    assert len(loaded) == 6  # conv weight/bias, bn weight/bias/_mean/_variance
    assert dict(skipped) == {
        "cls.weight": "shape [19, 8, 1, 1] in the file, [2, 8, 1, 1] in the network",
        "cls.bias": "shape [19] in the file, [2] in the network"}
    src, dst = source.state_dict(), target.state_dict()
    for key in loaded:
        np.testing.assert_array_equal(dst[key].numpy(), src[key].numpy())
    assert not np.array_equal(dst["cls.bias"].numpy()[:2], src["cls.bias"].numpy()[:2])
    warnings = [r.getMessage() for r in log_records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cls.weight" in warnings[0] and "cls.bias" in warnings[0]


def test_load_reports_keys_missing_from_file(tmp_path):
    state = TinyNet(2).state_dict()
    del state["backbone.bn._variance"]
    paddle.save(state, str(tmp_path / "partial.pdparams"))
    _, skipped = load_pretrained_weights(TinyNet(2), str(tmp_path / "partial.pdparams"))
    assert skipped == [("backbone.bn._variance", "missing from the file")]


@pytest.mark.parametrize("layout", ["backbone_only", "net_prefix"])
def test_load_handles_a_simple_prefix_difference(tmp_path, layout):
    source = randomize(TinyNet(2), seed=3)
    if layout == "backbone_only":  # e.g. an ImageNet backbone archive
        state = source.backbone.state_dict()
    else:  # e.g. a wrapper that saved the network as `self.net`
        state = {f"net.{k}": v for k, v in source.state_dict().items()}
    paddle.save(state, str(tmp_path / "w.pdparams"))
    target = TinyNet(2)
    loaded, skipped = load_pretrained_weights(target, str(tmp_path / "w.pdparams"))
    expected = [k for k in target.state_dict() if layout == "net_prefix" or k.startswith("backbone.")]
    assert sorted(loaded) == sorted(expected)
    if layout == "backbone_only":
        assert [k for k, _ in skipped] == ["cls.weight", "cls.bias"]
    np.testing.assert_array_equal(target.backbone.conv.weight.numpy(),
                                  source.backbone.conv.weight.numpy())


def test_load_rejects_bad_files(tmp_path):
    junk = tmp_path / "junk.pdparams"
    junk.write_bytes(b"this is not a pickle" * 20)
    with pytest.raises(ValueError, match=re.escape(f"{junk} is not a valid .pdparams file")):
        load_pretrained_weights(TinyNet(2), str(junk))
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained_weights(TinyNet(2), str(tmp_path / "absent.pdparams"))
