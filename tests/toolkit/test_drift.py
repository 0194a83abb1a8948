import math

import numpy as np
import pytest

from deploycmp.measure.drift import drift, metrics, samples_to_look_at


def test_metrics_match_hand_computation():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 0.0, 4.0]], dtype=np.float32)
    out = np.array([[1.0, 2.0, 4.0], [3.0, 0.0, 4.0]], dtype=np.float32)
    d = drift({"logits": ref}, {"logits": out})
    assert d["output"] == "logits" and d["kind"] == "logits"  # [batch, 3]: logits by its shape
    # error is 1 in one of 6 elements
    assert d["max_abs"] == 1.0
    assert d["mean_abs"] == pytest.approx(1 / 6)
    # ||err|| = 1, ||ref|| = sqrt(1+4+9+9+16) = sqrt(39)
    assert d["rel_l2"] == pytest.approx(1 / math.sqrt(39))
    assert d["sqnr_db"] == pytest.approx(10 * math.log10(39))
    # sample 0: cos = (1+4+12)/(sqrt(14)*sqrt(21)); sample 1 identical
    c0 = 17 / (math.sqrt(14) * math.sqrt(21))
    assert d["cosine_min"] == pytest.approx(c0)
    assert d["cosine_mean"] == pytest.approx((c0 + 1) / 2)
    assert d["top1_agreement"] == 1.0  # argmax 2 and 2
    assert d["top5_overlap"] == 1.0  # only 3 classes: top-3 sets are equal
    assert d["identical"] is False and d["samples"] == 2
    assert metrics(ref, out, "logits") == d["outputs"]["logits"]


def test_top1_and_top5_disagreement():
    ref = np.array([[6, 5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5, 6]], dtype=np.float32)
    out = ref.copy()
    out[0] = [0, 5, 4, 3, 2, 1, 6]  # top-1 moves from class 0 to 6; top-5 loses class 0, gains 6
    d = drift({"logits": ref}, {"logits": out})
    assert d["top1_agreement"] == 0.5
    assert d["top5_overlap"] == pytest.approx((4 / 5 + 1) / 2)


def test_identical_outputs_have_no_finite_sqnr():
    ref = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    d = drift({"logits": ref}, {"logits": ref.copy()})
    assert d["identical"] is True and d["sqnr_db"] is None
    assert d["max_abs"] == 0.0 and d["rel_l2"] == 0.0 and d["cosine_min"] == pytest.approx(1.0)


def test_several_outputs_are_reported_per_output_with_the_first_on_top():
    a, b = np.ones((2, 3), np.float32), np.zeros((2, 1), np.float32)
    d = drift({"scores": a, "extra": b}, {"scores": a, "extra": b + 2})
    assert list(d["outputs"]) == ["scores", "extra"] and d["output"] == "scores"
    scores, extra = d["outputs"]["scores"], d["outputs"]["extra"]
    assert scores["max_abs"] == 0.0 and scores["identical"] is True and scores["kind"] == "logits"
    assert extra["max_abs"] == 2.0 and extra["mean_abs"] == pytest.approx(2.0) and extra["identical"] is False
    assert extra["kind"] == "other" and extra["top1_agreement"] is None  # [batch, 1]: not logits
    # the top level is the first output's, not a mix of both
    assert d["max_abs"] == 0.0 and d["identical"] is True
    assert {k: v for k, v in d.items() if k not in ("output", "outputs")} == scores
    # the order of the reference decides which output is on top
    d2 = drift({"extra": b, "scores": a}, {"scores": a, "extra": b + 2})
    assert d2["output"] == "extra" and d2["max_abs"] == 2.0


def test_bad_outputs_raise():
    ref = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        drift({"y": ref}, {"y": np.ones((2, 4), np.float32)})
    with pytest.raises(ValueError, match="no output 'y'"):
        drift({"y": ref}, {"z": ref})
    with pytest.raises(ValueError, match="non-finite"):
        drift({"y": ref}, {"y": np.full((2, 3), np.nan, np.float32)})


def test_accuracy_against_hand_made_labels():
    ref = {"logits": np.array([[3.0, 1, 0], [0, 2, 1], [1, 0, 2], [2, 1, 0]])}
    out = {"logits": np.array([[3.0, 1, 0], [0, 2, 3], [1, 0, 2], [0, 3, 0]])}  # sample 1 flips 1 -> 2, sample 3 flips 0 -> 1
    labels = np.array([0, 1, 2, 1])
    d = drift(ref, out, labels)
    assert d["reference_accuracy"] == 0.75 and d["accuracy"] == 0.75  # loses sample 1, gains sample 3
    assert d["accuracy_delta_pp"] == 0.0 and d["top1_agreement"] == 0.5
    d = drift(ref, out, np.array([0, 1, 2, 0]))
    assert d["reference_accuracy"] == 1.0 and d["accuracy"] == 0.5 and d["accuracy_delta_pp"] == -50.0
    assert "accuracy" not in drift(ref, out)
    seen = samples_to_look_at(ref, out, labels, largest=2)
    assert seen["flipped"] == [{"index": 1, "reference_top1": 1, "top1": 2, "label": 1},
                               {"index": 3, "reference_top1": 0, "top1": 1, "label": 1}]
    assert [e["index"] for e in seen["largest_drift"]] == [3, 1]


def test_top1_and_accuracy_only_for_logits():
    ref = np.array([[3.0, 1, 0], [0, 2, 1]])
    out = np.array([[0.0, 1, 3], [0, 2, 1]])  # top-1 of sample 0 would flip
    for kind in ("other", "sequence"):
        m = metrics(ref, out, kind, labels=np.array([0, 1]))
        assert m["kind"] == kind and m["top1_agreement"] is None and m["top5_overlap"] is None
        assert "accuracy" not in m and "reference_accuracy" not in m
        assert m["max_abs"] == 3.0  # the other metrics still count
    d = drift({"hidden": ref}, {"hidden": out}, np.array([0, 1]), kinds={"hidden": "other"})
    assert d["top1_agreement"] is None and "accuracy" not in d
    seen = samples_to_look_at({"hidden": ref}, {"hidden": out}, kinds={"hidden": "other"})
    assert seen["flipped"] == [] and seen["largest_drift"][0]["index"] == 0  # no logits: nothing flips
    assert metrics(ref, out, "logits")["top1_agreement"] == 0.5


def test_sequence_output_leaves_out_padded_positions():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 4, 3)).astype(np.float32)  # [batch, sequence, hidden]
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.int64)
    padded = ref.copy()
    padded[0, 3] += 5.0  # mask 0
    padded[1, 2:] -= 7.0  # mask 0
    d = drift({"hidden": ref}, {"hidden": padded}, kinds={"hidden": "sequence"}, mask=mask)
    assert d["kind"] == "sequence" and d["identical"] is True and d["max_abs"] == 0.0 and d["mean_abs"] == 0.0
    assert d["sqnr_db"] is None and d["rel_l2"] == 0.0 and d["cosine_min"] == pytest.approx(1.0)
    assert d["padding_excluded"] is True and d["top1_agreement"] is None

    # without the mask (or as a kind that is not "sequence") the padded positions count
    assert metrics(ref, padded, "sequence")["max_abs"] == pytest.approx(7.0)
    assert metrics(ref, padded, "other", mask=mask)["max_abs"] == pytest.approx(7.0)

    kept = ref.copy()
    kept[1, 1, 2] += 0.5  # mask 1
    m = metrics(ref, kept, "sequence", mask=mask)
    assert m["identical"] is False and m["max_abs"] == pytest.approx(0.5)
    # the mean is over the 5 kept positions x 3 values, not all 24 values
    assert m["mean_abs"] == pytest.approx(0.5 / 15)
    assert m["sqnr_db"] is not None and m["sqnr_db"] > 0

    full = np.ones((2, 4), np.int64)  # nothing padded: same as no mask
    assert "padding_excluded" not in metrics(ref, kept, "sequence", mask=full)
    assert metrics(ref, kept, "sequence", mask=full)["mean_abs"] == pytest.approx(0.5 / 24)


def test_mask_applies_only_to_sequence_outputs():
    ref = {"hidden": np.zeros((2, 4, 3), np.float32), "pooled": np.zeros((2, 3), np.float32)}
    out = {"hidden": ref["hidden"].copy(), "pooled": ref["pooled"].copy()}
    out["hidden"][0, 3] = 1.0
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    d = drift(ref, out, kinds={"hidden": "sequence", "pooled": "other"}, mask=mask)
    assert d["output"] == "hidden" and d["identical"] is True
    assert d["outputs"]["pooled"]["identical"] is True and "padding_excluded" not in d["outputs"]["pooled"]
    out["hidden"][1, 3] = 1.0  # kept
    assert drift(ref, out, kinds={"hidden": "sequence"}, mask=mask)["max_abs"] == 1.0


def test_degenerate_references_are_found_and_named():
    from deploycmp.core.degenerate import check, check_outputs, hides, mark

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((8, 5))
    assert check(logits, "logits") is None
    assert check(np.zeros((8, 5)), "logits") == {"reason": "reference outputs are constant (all 0)", "scope": "all"}
    assert "constant over samples" in check(np.tile(logits[:1], (8, 1)), "logits")["reason"]
    assert "tiny" in check(logits * 1e-9, "logits")["reason"]
    assert "NaN/inf" in check(np.array([[1.0, np.nan]] * 2), "other")["reason"]
    one_class = logits.copy()
    one_class[:, 2] += 100
    assert check(one_class, "logits") == {"reason": "class 2 wins every one of the 8 samples: top-1 says nothing",
                                          "scope": "top1"}
    assert check(one_class, "other") is None  # only logits have a top-1
    findings = check_outputs({"a": logits, "b": np.zeros((8, 3))}, {"a": "logits"})
    assert list(findings) == ["b"]
    d = mark(drift({"b": np.zeros((8, 3)), "a": logits}, {"b": np.zeros((8, 3)), "a": logits}), findings)
    assert d["degenerate"]["scope"] == "all" and "degenerate" not in d["outputs"]["a"]
    assert hides(d, "sqnr_db") and hides(d, "top1_agreement")
    top1_only = {"degenerate": {"reason": "x", "scope": "top1"}}
    assert hides(top1_only, "top1_agreement") and not hides(top1_only, "sqnr_db")


def test_hidden_states_have_their_cosine_per_token():
    """One token turned around is a cosine of -1 for that token, whatever the rest of its sample says; a padded
    token turned around counts for nothing."""
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((2, 5, 8))
    out = ref.copy()
    out[0, 1] *= -1
    m = metrics(ref, out, "sequence")
    assert m["cosine_per"] == "token" and m["cosine_min"] == pytest.approx(-1.0)
    assert m["cosine_mean"] == pytest.approx(1 - 2 / 10)  # 9 tokens at 1, one at -1
    assert metrics(ref, out, "other")["cosine_min"] > -0.5  # per sample the turned token is diluted
    mask = np.ones((2, 5), np.int64)
    mask[0, 1] = 0
    assert metrics(ref, out, "sequence", mask=mask)["cosine_min"] == pytest.approx(1.0)
