import numpy as np
import pytest
from PIL import Image

from toolkit import data
from toolkit.errors import UsageError


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


def test_image_folder_gives_normalized_images_and_labels(tmp_path):
    for cls, value in (("cat", 0), ("dog", 255)):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (20, 10), (value, value, value)).save(tmp_path / cls / "a.png")
    x, y, info = data.load(str(tmp_path), [1, 3, 8, 8], 10)
    assert x.shape == (2, 3, 8, 8) and info["classes"] == ["cat", "dog"]
    black = x[list(y).index(0)]
    assert black[0, 0, 0] == pytest.approx((0 - 0.485) / 0.229)


def test_unknown_data():
    with pytest.raises(UsageError, match="--data"):
        data.load("somewhere-else", [1, 3, 8, 8], 2)
