import numpy as np
import pytest
from PIL import Image

from deploycmp import data
from deploycmp.errors import UsageError


def test_random_is_seeded_and_recorded():
    x1, y, info = data.load("random", [1, 3, 8, 8], 5)
    x2, _, _ = data.load("random", [1, 3, 8, 8], 5)
    assert x1.shape == (5, 3, 8, 8) and x1.dtype == np.float32 and y is None
    np.testing.assert_array_equal(x1, x2)
    assert info["samples"] == 5 and len(info["sha256"]) == 64


def test_npz_with_labels_and_wrong_shape(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, x=np.ones((6, 3, 8, 8)), y=np.arange(6))
    x, y, info = data.load(str(f), [1, 3, 8, 8], 4)
    assert x.shape == (4, 3, 8, 8) and list(y) == [0, 1, 2, 3] and info["labeled"]
    with pytest.raises(UsageError, match="the model takes"):
        data.load(str(f), [1, 3, 9, 9], 4)
    np.savez(tmp_path / "nox.npz", z=np.ones(3))
    with pytest.raises(UsageError, match="no array named 'x'"):
        data.load(str(tmp_path / "nox.npz"), [1, 3, 8, 8], 4)


def test_image_folder_gives_preprocessed_images_and_labels(tmp_path):
    for cls, value in (("cat", 0), ("dog", 255)):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (20, 10), (value, value, value)).save(tmp_path / cls / "a.png")
    x, y, info = data.load(str(tmp_path), [1, 3, 8, 8], 10, preprocess=data.IMAGENET)
    assert x.shape == (2, 3, 8, 8) and info["classes"] == ["cat", "dog"]
    black, white = x[list(y).index(0)], x[list(y).index(1)]
    assert black[0, 0, 0] == pytest.approx((0 - 0.485) / 0.229)
    assert white[2, 3, 3] == pytest.approx((1 - 0.406) / 0.225)
    raw, _, _ = data.load(str(tmp_path), [1, 8, 8, 3], 10, layout="NHWC")  # no preprocessing: [0, 1], NHWC
    assert raw.shape == (2, 8, 8, 3) and set(np.unique(raw)) == {0.0, 1.0}


def test_digits_are_labeled_preprocessed_and_held_out():
    x, y, info = data.load("digits", [1, 3, 16, 16], 50, preprocess=data.parse_preprocess("0.5", "0.25"))
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
    with pytest.raises(UsageError, match="image model input"):
        data.load("digits", [1, 10], 4)


def test_split_is_disjoint_and_reproducible():
    x = np.arange(40, dtype=np.float32).reshape(40, 1)
    y = np.arange(40) % 10
    cal, ev, ev_y, record = data.split(x, y, 12)
    cal2, ev2, _, record2 = data.split(x, y, 12)
    np.testing.assert_array_equal(cal, cal2) and np.testing.assert_array_equal(ev, ev2)
    assert record == record2 and record["calibration"]["samples"] == 12 and record["evaluation"]["samples"] == 28
    assert not set(cal.ravel()) & set(ev.ravel()) and len(set(cal.ravel()) | set(ev.ravel())) == 40
    np.testing.assert_array_equal(ev_y, ev.ravel().astype(int) % 10)  # labels follow their samples
    other, _, _, _ = data.split(x, y, 12, seed=1)
    assert not np.array_equal(cal, other)


def test_unknown_data():
    with pytest.raises(UsageError, match="--data"):
        data.load("somewhere-else", [1, 3, 8, 8], 2)
