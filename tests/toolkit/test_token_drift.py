"""Teacher-forced drift of a language model's logits (deploycmp.measure.token_drift), against torch's own KL
divergence and cross entropy, and llama-perplexity's definitions (KL of the reference's distribution to the path's,
same top token, perplexity ratio, RMS of the target token's probability change)."""
import math

import numpy as np
import pytest
import torch

from deploycmp.measure.token_drift import first_divergence, log_softmax, token_drift


def _logits(seed=0, shape=(3, 7, 50), scale=4.0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * scale


def test_kl_perplexity_and_agreement_are_torchs_on_the_scored_positions():
    ref = _logits()
    got = ref + _logits(1, scale=0.5)
    targets = np.random.default_rng(2).integers(0, 50, size=(3, 7))
    mask = np.ones((3, 7), bool)
    mask[:, :3] = False  # the first positions are context only, as llama-perplexity scores a window's second half
    d = token_drift(ref, got, targets, mask)

    r, g = (torch.from_numpy(a.reshape(-1, 50)[mask.reshape(-1)]).double() for a in (ref, got))
    t = torch.from_numpy(targets.reshape(-1)[mask.reshape(-1)])
    kl = torch.nn.functional.kl_div(torch.log_softmax(g, -1), torch.log_softmax(r, -1), log_target=True,
                                    reduction="none").sum(-1)
    assert d["positions"] == 12
    assert d["kl_mean"] == pytest.approx(float(kl.mean()), rel=1e-9) and d["kl_mean"] > 0
    assert d["kl_max"] == pytest.approx(float(kl.max()), rel=1e-9)
    assert d["kl_median"] <= d["kl_p99"] <= d["kl_max"]
    ppl_ref = math.exp(float(torch.nn.functional.cross_entropy(r, t)))
    ppl = math.exp(float(torch.nn.functional.cross_entropy(g, t)))
    assert d["perplexity_reference"] == pytest.approx(ppl_ref, rel=1e-9)
    assert d["perplexity"] == pytest.approx(ppl, rel=1e-9)
    assert d["perplexity_change_pct"] == pytest.approx((ppl / ppl_ref - 1) * 100, rel=1e-9)
    assert d["ln_ppl_ratio"] == pytest.approx(math.log(ppl / ppl_ref), rel=1e-9)
    assert d["top1_agreement"] == pytest.approx(float((r.argmax(-1) == g.argmax(-1)).double().mean()))
    p_ref, p = (torch.softmax(x, -1)[torch.arange(len(t)), t] for x in (r, g))
    assert d["rms_delta_p"] == pytest.approx(float(((p - p_ref) ** 2).mean().sqrt()), rel=1e-9)
    assert d["logit_sqnr_db"] == pytest.approx(10 * math.log10(float((r ** 2).sum() / ((g - r) ** 2).sum())), rel=1e-6)


def test_the_same_logits_have_no_drift_and_large_logits_do_not_overflow():
    ref = _logits()
    d = token_drift(ref, ref.copy(), np.zeros(ref.shape[:2], int))
    assert d["identical"] and d["kl_max"] == 0 and d["top1_agreement"] == 1 and d["logit_sqnr_db"] is None
    assert d["perplexity_change_pct"] == 0 and d["rms_delta_p"] == 0
    ref = _logits(scale=1e4)  # exp(1e4) overflows without the max subtracted
    assert np.allclose(np.exp(log_softmax(ref)).sum(-1), 1)
    huge = token_drift(ref, ref + 1.0, np.zeros(ref.shape[:2], int))  # the targets are all but impossible
    assert huge["perplexity"] == math.inf and huge["perplexity_change_pct"] is None
    assert huge["ln_ppl_ratio"] == pytest.approx(0, abs=1e-6) and huge["kl_max"] < 1e-9
    shifted = token_drift(ref, ref + 3.0)  # a constant added to every logit is the same distribution
    assert shifted["kl_max"] < 1e-9 and shifted["top1_agreement"] == 1 and not shifted["identical"]


def test_a_worse_path_has_more_kl_and_perplexity():
    ref = _logits(scale=6.0)
    targets = ref.argmax(-1)  # text the reference predicts well
    slight, worse = (token_drift(ref, ref + _logits(1, scale=s), targets) for s in (0.3, 3.0))
    assert slight["kl_mean"] < worse["kl_mean"] and slight["perplexity_change_pct"] < worse["perplexity_change_pct"]
    assert worse["top1_agreement"] < slight["top1_agreement"] <= 1


@pytest.mark.parametrize("args, needle", [
    ((_logits(), _logits(shape=(3, 7, 49))), "shape differs"),
    ((_logits(shape=(50,)), _logits(shape=(50,))), "expected [positions, vocab]"),
    ((_logits(), np.full((3, 7, 50), np.nan)), "non-finite"),
    ((_logits(), _logits(1), None, np.zeros((3, 7), bool)), "no position to score"),
    ((_logits(), _logits(1), None, np.ones((3, 6), bool)), "mask"),
    ((_logits(), _logits(1), np.full((3, 7), 50)), "vocabulary"),
])
def test_bad_input_is_one_clear_error(args, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[")):
        token_drift(*args)


def test_first_divergence_of_greedy_tokens():
    assert first_divergence([5, 6, 7, 8], [5, 6, 7, 8]) is None
    assert first_divergence([5, 6, 7, 8], [5, 6, 9, 8]) == 2
    assert first_divergence([5, 6, 7, 8], [5, 6]) == 2  # stopped early: differs where it stopped
    assert first_divergence(np.array([[1, 2]]), np.array([1, 3])) == 1
