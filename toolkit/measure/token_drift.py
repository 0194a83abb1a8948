"""Drift of a language model's path against its reference, the way llama.cpp's llama-perplexity compares two models
(`--kl-divergence`): teacher-forced next-token distributions on the same token ids, position by position.

    token_drift(reference_logits, logits, targets, mask)

`reference_logits` and `logits` are [positions, vocab] (or [sequences, positions, vocab]) from the same token ids;
`targets` the token that follows each position (for perplexity); `mask` the positions to score (llama-perplexity
scores the second half of each context window; padding is left out). Per position: KL(P_reference || P_path) in
nats, whether the most likely next token is the same ("same top p"), the target token's probability under each.
Over the scored positions: KL mean, median, p99, max; top-1 agreement; logit SQNR; each perplexity and the change
in percent; RMS of the target token's probability change (llama-perplexity's "RMS Δp"). Greedy generation is
compared with first_divergence."""
from __future__ import annotations

import math

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, in float64 (max subtracted first: no overflow at large logits)."""
    x = np.asarray(logits, np.float64)
    x = x - np.max(x, axis=-1, keepdims=True)
    return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))


def _positions(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name}: expected [positions, vocab] or [sequences, positions, vocab], got shape {a.shape}")
    return a.reshape(-1, a.shape[-1])


def token_drift(reference_logits, logits, targets=None, mask=None) -> dict:
    ref, got = _positions(reference_logits, "reference logits"), _positions(logits, "logits")
    if ref.shape != got.shape:
        raise ValueError(f"shape differs: reference {np.shape(reference_logits)}, path {np.shape(logits)}")
    if not np.all(np.isfinite(got)):
        raise ValueError(f"the path produced {int(np.sum(~np.isfinite(got)))} non-finite logits")
    keep = np.ones(len(ref), bool) if mask is None else np.asarray(mask).astype(bool).reshape(-1)
    if keep.shape != (len(ref),):
        raise ValueError(f"mask: {np.shape(mask)} does not match the logits' positions "
                         f"{np.shape(reference_logits)[:-1]}")
    if not keep.any():
        raise ValueError("no position to score (the mask leaves none)")
    ref, got = ref[keep], got[keep]
    lp_ref, lp_got = log_softmax(ref), log_softmax(got)
    kl = np.maximum(np.sum(np.exp(lp_ref) * (lp_ref - lp_got), axis=-1), 0.0)  # >= 0 up to rounding
    noise, signal = float(np.sum((got.astype(np.float64) - ref) ** 2)), float(np.sum(ref.astype(np.float64) ** 2))
    result = {
        "positions": int(len(ref)),
        "kl_mean": float(np.mean(kl)), "kl_median": float(np.median(kl)),
        "kl_p99": float(np.percentile(kl, 99)), "kl_max": float(np.max(kl)),
        "top1_agreement": float(np.mean(np.argmax(ref, -1) == np.argmax(got, -1))),
        "logit_sqnr_db": 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else None,
        "identical": noise == 0,
    }
    if targets is not None:
        t = np.asarray(targets).reshape(-1)
        if t.shape != keep.shape:
            raise ValueError(f"targets: {np.shape(targets)} does not match the logits' positions")
        t = t[keep].astype(np.int64)
        if t.min() < 0 or t.max() >= ref.shape[-1]:
            raise ValueError(f"targets: token ids must be in [0, {ref.shape[-1]}) (the vocabulary)")
        nll_ref, nll_got = -lp_ref[np.arange(len(t)), t], -lp_got[np.arange(len(t)), t]
        ppl_ref, ppl_got = (_exp(float(np.mean(n))) for n in (nll_ref, nll_got))
        delta_p = np.exp(-nll_got) - np.exp(-nll_ref)
        result.update({"perplexity_reference": ppl_ref, "perplexity": ppl_got,
                       "perplexity_change_pct": (ppl_got / ppl_ref - 1) * 100 if math.isfinite(ppl_got / ppl_ref)
                       else None,
                       "ln_ppl_ratio": float(np.mean(nll_got) - np.mean(nll_ref)),
                       "rms_delta_p": float(np.sqrt(np.mean(delta_p ** 2)))})
    return result


def _exp(x: float) -> float:
    """e**x, inf past float64's range (a perplexity can be: ln_ppl_ratio stays finite)."""
    return math.exp(x) if x < 709 else math.inf


def first_divergence(reference_tokens, tokens) -> int | None:
    """The index of the first generated token that differs from the reference's (greedy decoding, same prompt); None
    where the two are the same; where one stopped early and they agree until then, the length of the shorter."""
    ref, got = list(np.asarray(reference_tokens).reshape(-1)), list(np.asarray(tokens).reshape(-1))
    for i, (a, b) in enumerate(zip(ref, got)):
        if a != b:
            return i
    return None if len(ref) == len(got) else min(len(ref), len(got))
