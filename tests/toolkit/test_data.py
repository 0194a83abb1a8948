import numpy as np
import pytest
from PIL import Image

from deploycmp.core.errors import UsageError
from deploycmp.core.specs import InputSpec
from deploycmp.sources import data


def image(shape=(3, 8, 8), layout="NCHW", name="x"):
    return [InputSpec(name, "float32", ["batch", *shape], layout=layout)]


def test_random_is_seeded_and_recorded():
    feed1, y, info = data.load("random", image(), {}, 5)
    feed2, _, _ = data.load("random", image(), {}, 5)
    x1 = feed1["x"]
    assert list(feed1) == ["x"]
    assert x1.shape == (5, 3, 8, 8) and x1.dtype == np.float32 and y is None
    np.testing.assert_array_equal(x1, feed2["x"])
    assert info["samples"] == 5 and len(info["sha256"]) == 64 and info["kind"] == "random"
    assert info["sha256"] == data.feed_sha256(feed2)


TEXT = [
    InputSpec("ids", "int64", ["batch", "sequence"], value_range=[0, 1000]),
    InputSpec("feats", "float32", ["batch", "sequence", 4]),
    InputSpec("attention_mask", "int64", ["batch", "sequence"]),
    InputSpec("flags", "bool", ["batch", 3]),
]


def test_random_values_follow_each_input_dtype_and_range():
    feed, y, info = data.load("random", TEXT, {"sequence": 32}, 200, seed=3)
    assert list(feed) == ["ids", "feats", "attention_mask", "flags"] and y is None and info["samples"] == 200

    ids = feed["ids"]
    assert ids.shape == (200, 32) and ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 1000
    assert ids.max() > 500  # drawn from the whole range, not the 0..255 fallback

    feats = feed["feats"]
    assert feats.shape == (200, 32, 4) and feats.dtype == np.float32
    assert abs(float(feats.mean())) < 0.05 and abs(float(feats.std()) - 1.0) < 0.05  # standard normal
    assert feats.min() < 0  # not uniform [0, 1)

    mask = feed["attention_mask"]
    assert mask.shape == (200, 32) and mask.dtype == np.int64
    assert set(np.unique(mask)) <= {0, 1}
    assert np.all(mask[:, 0] == 1)  # every row keeps at least its first position
    assert np.all(np.diff(mask, axis=1) <= 0)  # ones then zeros
    assert np.any(mask == 0)  # some padding is drawn
    assert len(set(mask.sum(axis=1))) > 1  # lengths drawn per sample

    flags = feed["flags"]
    assert flags.shape == (200, 3) and flags.dtype == np.bool_
    assert flags.any() and not flags.all()


def test_random_is_seeded_per_input():
    a, _, info_a = data.load("random", TEXT, {"sequence": 8}, 6, seed=7)
    b, _, info_b = data.load("random", TEXT, {"sequence": 8}, 6, seed=7)
    c, _, info_c = data.load("random", TEXT, {"sequence": 8}, 6, seed=8)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert info_a["sha256"] == info_b["sha256"] and info_a["seed"] == 7
    assert not np.array_equal(a["feats"], c["feats"]) and info_c["sha256"] != info_a["sha256"]


def test_random_needs_every_named_dimension():
    with pytest.raises(UsageError, match="sequence"):
        data.load("random", TEXT, {}, 2)


def test_npz_with_labels_and_wrong_shape(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, x=np.ones((6, 3, 8, 8)), y=np.arange(6))
    feed, y, info = data.load(str(f), image(), {}, 4)
    x = feed["x"]
    assert x.shape == (4, 3, 8, 8) and list(y) == [0, 1, 2, 3] and info["labeled"]
    assert x.dtype == np.float32  # float64 in the file, cast to the input's dtype
    with pytest.raises(UsageError, match="the model takes"):
        data.load(str(f), image((3, 9, 9)), {}, 4)
    np.savez(tmp_path / "nox.npz", z=np.ones(3))
    with pytest.raises(UsageError, match="no array named 'x'"):
        data.load(str(tmp_path / "nox.npz"), image(), {}, 4)


def test_npz_single_input_may_be_called_x(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, x=np.zeros((3, 3, 8, 8), np.float32))
    feed, y, info = data.load(str(f), image(name="pixel_values"), {}, 10)
    assert list(feed) == ["pixel_values"] and feed["pixel_values"].shape == (3, 3, 8, 8)
    assert y is None and not info["labeled"] and info["samples"] == 3


def test_npz_with_named_inputs_and_labels(tmp_path):
    inputs = [InputSpec("ids", "int64", ["batch", "sequence"], value_range=[0, 100]),
              InputSpec("attention_mask", "int64", ["batch", "sequence"])]
    ids = np.arange(5 * 16).reshape(5, 16)
    mask = np.ones((5, 16), np.int32)
    f = tmp_path / "text.npz"
    np.savez(f, ids=ids, attention_mask=mask, labels=np.array([1, 0, 1, 1, 0]))
    feed, y, info = data.load(str(f), inputs, {"sequence": 16}, 4)
    assert list(feed) == ["ids", "attention_mask"]
    np.testing.assert_array_equal(feed["ids"], ids[:4])
    np.testing.assert_array_equal(feed["attention_mask"], mask[:4])
    assert feed["attention_mask"].dtype == np.int64  # int32 in the file, cast to int64
    assert list(y) == [1, 0, 1, 1] and info["labeled"] and info["kind"] == "npz" and info["samples"] == 4

    missing = tmp_path / "missing.npz"
    np.savez(missing, ids=ids, x=mask)  # `x` is no alias for a model with two inputs
    with pytest.raises(UsageError, match="no array named 'attention_mask'"):
        data.load(str(missing), inputs, {"sequence": 16}, 4)

    with pytest.raises(UsageError, match="attention_mask.*the model takes"):
        data.load(str(f), [inputs[0], InputSpec("attention_mask", "int64", ["batch", 8])], {"sequence": 16}, 4)
    with pytest.raises(UsageError, match="ids has samples of shape"):
        data.load(str(f), inputs, {"sequence": 32}, 4)  # 16 tokens in the file, the point wants 32

    floats = tmp_path / "floats.npz"
    np.savez(floats, ids=ids.astype(np.float32), attention_mask=mask)
    with pytest.raises(UsageError, match="ids is float32, the model takes int64"):
        data.load(str(floats), inputs, {"sequence": 16}, 4)


def test_image_folder_gives_preprocessed_images_and_labels(tmp_path):
    for cls, value in (("cat", 0), ("dog", 255)):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (20, 10), (value, value, value)).save(tmp_path / cls / "a.png")
    feed, y, info = data.load(str(tmp_path), image(), {}, 10, preprocess=data.IMAGENET)
    x = feed["x"]
    assert x.shape == (2, 3, 8, 8) and info["classes"] == ["cat", "dog"]
    black, white = x[list(y).index(0)], x[list(y).index(1)]
    assert black[0, 0, 0] == pytest.approx((0 - 0.485) / 0.229)
    assert white[2, 3, 3] == pytest.approx((1 - 0.406) / 0.225)
    raw_feed, _, _ = data.load(str(tmp_path), image((8, 8, 3), "NHWC"), {}, 10)  # no preprocessing: [0, 1], NHWC
    raw = raw_feed["x"]
    assert raw.shape == (2, 8, 8, 3) and set(np.unique(raw)) == {0.0, 1.0}


def test_digits_are_labeled_preprocessed_and_held_out():
    feed, y, info = data.load("digits", image((3, 16, 16)), {}, 50, preprocess=data.parse_preprocess("0.5", "0.25"))
    x = feed["x"]
    assert x.shape == (50, 3, 16, 16) and y.shape == (50,) and info["labeled"] and info["kind"] == "digits"
    assert set(y) <= set(range(10)) and len(set(y)) == 10
    assert x.min() == pytest.approx(-2.0) and x.max() == pytest.approx(2.0)  # (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    np.testing.assert_array_equal(x[:, 0], x[:, 2])  # gray levels in every channel
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(y, load_digits().target[-data.DIGITS_HELD_OUT:][:50])
    train_x, train_y = data.digits("train", (1, 8, 8), "NCHW", None)
    assert len(train_x) + data.DIGITS_HELD_OUT == 1797
    np.testing.assert_allclose(train_x[0, 0], load_digits().images[0] / 16, atol=1 / 255)  # 8x8 kept as is


def test_keras_preprocessing_and_bad_flags():
    from PIL import Image as PILImage

    img = PILImage.new("RGB", (4, 4), (255, 255, 255))
    fake = {"kind": "keras", "module": "tests.toolkit.fake_preprocess"}
    x = data.to_model_input([img], (4, 4, 3), "NHWC", fake)
    assert x.shape == (1, 4, 4, 3) and np.all(x == 1.0)  # 255 / 127.5 - 1, on [0, 255] pixels
    with pytest.raises(UsageError, match="--mean/--std"):
        data.parse_preprocess("a,b", None)
    with pytest.raises(UsageError, match="positive"):
        data.parse_preprocess(None, "0")
    with pytest.raises(UsageError, match="image model input"):  # an image layout, but not an image shape
        data.load("digits", [InputSpec("x", "float32", ["batch", 10], layout="NCHW")], {}, 4)


def test_image_data_needs_one_image_input():
    with pytest.raises(UsageError, match="one image input.*ids, attention_mask"):
        data.load("digits", [InputSpec("ids", "int64", ["batch", 8], value_range=[0, 10]),
                             InputSpec("attention_mask", "int64", ["batch", 8])], {}, 4)
    with pytest.raises(UsageError, match="one image input"):  # no layout: not an image input
        data.load("digits", [InputSpec("x", "float32", ["batch", 3, 8, 8])], {}, 4)


def test_split_is_disjoint_and_reproducible():
    x = np.arange(40, dtype=np.float32).reshape(40, 1)
    ids = np.arange(40, dtype=np.int64) * 10
    feed = {"x": x, "ids": ids}
    y = np.arange(40) % 10
    cal, ev, ev_y, record = data.split(feed, y, 12)
    cal2, ev2, _, record2 = data.split(feed, y, 12)
    for name in feed:
        np.testing.assert_array_equal(cal[name], cal2[name])
        np.testing.assert_array_equal(ev[name], ev2[name])
    assert record == record2 and record["calibration"]["samples"] == 12 and record["evaluation"]["samples"] == 28
    cx, ex = cal["x"], ev["x"]
    assert not set(cx.ravel()) & set(ex.ravel()) and len(set(cx.ravel()) | set(ex.ravel())) == 40
    np.testing.assert_array_equal(ev_y, ex.ravel().astype(int) % 10)  # labels follow their samples
    np.testing.assert_array_equal(ev["ids"], ex.ravel().astype(np.int64) * 10)  # every input follows its samples
    np.testing.assert_array_equal(cal["ids"], cx.ravel().astype(np.int64) * 10)
    assert record["calibration"]["sha256"] == data.feed_sha256(cal)
    other, _, _, _ = data.split(feed, y, 12, seed=1)
    assert not np.array_equal(cx, other["x"])
    _, _, none_y, _ = data.split(feed, None, 12)
    assert none_y is None


def test_split_bounds():
    feed = {"x": np.zeros((5, 2), np.float32)}
    cal, ev, _, record = data.split(feed, None, 100)  # at most half for calibration
    assert len(cal["x"]) == 2 and len(ev["x"]) == 3
    with pytest.raises(UsageError, match="at least 1"):
        data.split(feed, None, 0)
    with pytest.raises(UsageError, match="at least 2 samples"):
        data.split({"x": np.zeros((1, 2), np.float32)}, None, 1)


def test_unknown_data():
    with pytest.raises(UsageError, match="--data"):
        data.load("somewhere-else", image(), {}, 2)
    with pytest.raises(UsageError, match="--samples"):
        data.load("random", image(), {}, 0)
