"""Accuracy drift of an artifact's outputs against the source model's fp32 outputs on the same inputs, per output."""
from __future__ import annotations

import math

import numpy as np

KEYS = ("max_abs", "mean_abs", "rel_l2", "cosine_min", "cosine_mean", "sqnr_db", "top1_agreement", "top5_overlap")


def _per_sample(outputs: list[np.ndarray]) -> np.ndarray:
    """All outputs of a sample as one float64 vector (a model may have several output tensors)."""
    n = outputs[0].shape[0]
    return np.concatenate([np.asarray(o, dtype=np.float64).reshape(n, -1) for o in outputs], axis=1)


def _topk(a: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-a, axis=1, kind="stable")[:, :k]


def _keep(a: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """A [batch, sequence, ...] output with its padded positions (mask 0) set to 0, so they count for nothing."""
    m = np.asarray(mask).astype(bool)
    return a * m.reshape(*m.shape, *([1] * (a.ndim - m.ndim)))


def _cosine(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row; 1 where both rows are zero, 0 where only one is."""
    ref_norm, out_norm = np.linalg.norm(ref, axis=1), np.linalg.norm(out, axis=1)
    denom = ref_norm * out_norm
    return np.where(denom > 0, np.sum(ref * out, axis=1) / np.where(denom > 0, denom, 1.0),
                    np.where(ref_norm == out_norm, 1.0, 0.0))


def metrics(reference: np.ndarray, actual: np.ndarray, kind: str = "other", labels: np.ndarray | None = None,
            mask: np.ndarray | None = None) -> dict:
    """Drift of one output (samples first). sqnr_db is None when the outputs are bit-identical (infinite SQNR);
    `identical` says so. top-1/top-5 and accuracy only for a `logits` output; a `sequence` output ([batch, sequence,
    hidden]) has its cosine per token, and with a mask ([batch, sequence]) leaves out padded positions."""
    if np.shape(reference) != np.shape(actual):
        raise ValueError(f"shape differs: reference {np.shape(reference)}, artifact {np.shape(actual)}")
    ref, out = _per_sample([reference]), _per_sample([actual])
    if not np.all(np.isfinite(out)):
        raise ValueError(f"artifact produced {int(np.sum(~np.isfinite(out)))} non-finite output values")
    kept = ref.size
    if kind == "sequence" and mask is not None and np.ndim(reference) >= 2 and np.shape(mask)[:2] == np.shape(reference)[:2]:
        ref = _per_sample([_keep(np.asarray(reference, np.float64), mask)])
        out = _per_sample([_keep(np.asarray(actual, np.float64), mask)])
        kept = int(np.asarray(mask).astype(bool).sum()) * (ref.size // max(1, np.asarray(mask).size))
    err = out - ref
    signal, noise = float(np.sum(ref ** 2)), float(np.sum(err ** 2))
    per_token = kind == "sequence" and np.ndim(reference) >= 3
    if per_token:  # one vector per token: [batch * sequence, hidden], padded tokens left out
        tokens = np.ones(np.shape(reference)[:2], bool) if mask is None or np.shape(mask)[:2] != np.shape(reference)[:2] \
            else np.asarray(mask).astype(bool)
        cos = _cosine(ref.reshape(tokens.size, -1)[tokens.reshape(-1)], out.reshape(tokens.size, -1)[tokens.reshape(-1)])
    else:
        cos = _cosine(ref, out)
    result = {
        "max_abs": float(np.max(np.abs(err))) if err.size else 0.0,
        "mean_abs": float(np.sum(np.abs(err)) / kept) if kept else 0.0,
        "rel_l2": math.sqrt(noise) / math.sqrt(signal) if signal > 0 else (0.0 if noise == 0 else math.inf),
        "cosine_min": float(np.min(cos)),
        "cosine_mean": float(np.mean(cos)),
        "sqnr_db": 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else None,
        "identical": noise == 0,
        "top1_agreement": None,
        "top5_overlap": None,
        "samples": int(ref.shape[0]),
        "kind": kind,
    }
    if per_token:
        result["cosine_per"] = "token"
    if kind == "sequence" and mask is not None and kept != ref.size:
        result["padding_excluded"] = True
    if kind == "logits":
        r, a = np.asarray(reference), np.asarray(actual)
        result["top1_agreement"] = float(np.mean(np.argmax(r, 1) == np.argmax(a, 1)))
        k = min(5, r.shape[1])
        tr, ta = _topk(r, k), _topk(a, k)
        result["top5_overlap"] = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(tr, ta)]))
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            result["reference_accuracy"] = float(np.mean(np.argmax(r, 1) == labels))
            result["accuracy"] = float(np.mean(np.argmax(a, 1) == labels))
            result["accuracy_delta_pp"] = (result["accuracy"] - result["reference_accuracy"]) * 100
    return result


def kind_of(a: np.ndarray) -> str:
    return "logits" if np.ndim(a) == 2 and np.shape(a)[1] > 1 else "other"


def drift(reference: dict, actual: dict, labels: np.ndarray | None = None, kinds: dict | None = None,
          mask: np.ndarray | None = None) -> dict:
    """Drift per named output under `outputs`; the top-level keys are the first output's (what tables show)."""
    missing = [n for n in reference if n not in actual]
    if missing:
        raise ValueError(f"the artifact returned no output {missing[0]!r} (it returned {', '.join(actual)})")
    kinds = kinds or {}
    per = {n: metrics(reference[n], actual[n], kinds.get(n) or kind_of(reference[n]), labels, mask) for n in reference}
    first = next(iter(per))
    return {**per[first], "output": first, "outputs": per}


def samples_to_look_at(reference: dict, actual: dict, labels: np.ndarray | None = None, kinds: dict | None = None,
                       largest: int = 10) -> dict:
    """Indices (into the evaluation inputs) of the samples whose top-1 class flipped (in the first logits output),
    and of the `largest` samples by relative error over all outputs, with what each side said."""
    names = list(reference)
    ref, out = _per_sample([reference[n] for n in names]), _per_sample([actual[n] for n in names])
    rel = np.linalg.norm(out - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-30)
    worst = np.argsort(-rel, kind="stable")[:largest]
    result = {"largest_drift": [{"index": int(i), "rel_l2": float(rel[i])} for i in worst], "flipped": []}
    kinds = kinds or {}
    logits = next((n for n in names if (kinds.get(n) or kind_of(reference[n])) == "logits"), None)
    if logits is not None:
        top_ref, top_out = np.argmax(reference[logits], 1), np.argmax(actual[logits], 1)
        for i in np.flatnonzero(top_ref != top_out):
            entry = {"index": int(i), "reference_top1": int(top_ref[i]), "top1": int(top_out[i])}
            if labels is not None:
                entry["label"] = int(np.asarray(labels).reshape(-1)[i])
            result["flipped"].append(entry)
    return result
