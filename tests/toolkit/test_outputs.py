"""Outputs as a runtime returns them, matched to the source model's: by name, by number, and back to its layout."""
import numpy as np

from deploycmp.core.outputs import match
from deploycmp.measure.row_worker import outputs_to_layout


def test_renamed_outputs_are_matched_in_the_order_of_their_numbers_not_the_dicts():
    """onnx2tf's SavedModel signature returned CenterFace's four outputs as output_0, output_2, output_1, output_3
    (two of them of one shape): by position they must go by number."""
    got = {f"output_{i}": np.full((1, i + 1), i) for i in (0, 2, 1, 3, 10)}
    names = ["537", "538", "539", "540", "541"]
    matched = match(got, names)
    assert [int(matched[n][0, 0]) for n in names] == [0, 1, 2, 3, 10]
    assert list(match({"b": 1, "a": 2}, ["x", "y"]).values()) == [1, 2]  # other names: as they come
    assert match({"y": 1, "x": 2}, ["x", "y"]) == {"x": 2, "y": 1}  # the same names: by name


def test_channels_last_outputs_of_an_nchw_source_are_turned_back():
    ref = {"heatmap": np.zeros((2, 1, 8, 6)), "vector": np.zeros((2, 5))}
    got = {"heatmap": np.arange(96.0).reshape(2, 8, 6, 1), "vector": np.ones((2, 5))}
    out, turned = outputs_to_layout(got, ref, {"NCHW"}, "NHWC")
    assert turned == {"heatmap": "NCHW"} and out["heatmap"].shape == (2, 1, 8, 6)
    assert np.array_equal(out["heatmap"], got["heatmap"].transpose(0, 3, 1, 2)) and out["vector"] is got["vector"]
    assert outputs_to_layout(got, ref, {"NHWC"}, "NHWC") == (got, {})  # the same layout: nothing to do
