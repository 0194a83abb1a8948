"""Accuracy drift of an artifact's outputs against the source model's fp32 outputs on the same inputs."""
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


def drift(reference: list[np.ndarray], actual: list[np.ndarray], labels: np.ndarray | None = None) -> dict:
    """Drift metrics between two output lists (each array: samples first).

    sqnr_db is None when the outputs are bit-identical (infinite SQNR); `identical` says so.
    top-1/top-5 are computed on the first output when it is (samples, classes); with labels, so are the task
    accuracy of both and its change in percentage points (negative: the artifact is less accurate).
    """
    if len(reference) != len(actual):
        raise ValueError(f"output count differs: reference has {len(reference)}, artifact has {len(actual)}")
    for i, (r, a) in enumerate(zip(reference, actual)):
        if np.shape(r) != np.shape(a):
            raise ValueError(f"output {i} shape differs: reference {np.shape(r)}, artifact {np.shape(a)}")
    ref, out = _per_sample(reference), _per_sample(actual)
    if not np.all(np.isfinite(out)):
        bad = int(np.sum(~np.isfinite(out)))
        raise ValueError(f"artifact produced {bad} non-finite output values")
    err = out - ref
    signal, noise = float(np.sum(ref ** 2)), float(np.sum(err ** 2))
    ref_norm = np.linalg.norm(ref, axis=1)
    out_norm = np.linalg.norm(out, axis=1)
    denom = ref_norm * out_norm
    cos = np.where(denom > 0, np.sum(ref * out, axis=1) / np.where(denom > 0, denom, 1.0), np.where(ref_norm == out_norm, 1.0, 0.0))
    result = {
        "max_abs": float(np.max(np.abs(err))) if err.size else 0.0,
        "mean_abs": float(np.mean(np.abs(err))) if err.size else 0.0,
        "rel_l2": math.sqrt(noise) / math.sqrt(signal) if signal > 0 else (0.0 if noise == 0 else math.inf),
        "cosine_min": float(np.min(cos)),
        "cosine_mean": float(np.mean(cos)),
        "sqnr_db": 10 * math.log10(signal / noise) if noise > 0 and signal > 0 else None,
        "identical": noise == 0,
        "top1_agreement": None,
        "top5_overlap": None,
        "samples": int(ref.shape[0]),
    }
    first_ref, first_out = np.asarray(reference[0]), np.asarray(actual[0])
    if first_ref.ndim == 2 and first_ref.shape[1] > 1:
        result["top1_agreement"] = float(np.mean(np.argmax(first_ref, 1) == np.argmax(first_out, 1)))
        k = min(5, first_ref.shape[1])
        tr, ta = _topk(first_ref, k), _topk(first_out, k)
        result["top5_overlap"] = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(tr, ta)]))
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            result["reference_accuracy"] = float(np.mean(np.argmax(first_ref, 1) == labels))
            result["accuracy"] = float(np.mean(np.argmax(first_out, 1) == labels))
            result["accuracy_delta_pp"] = (result["accuracy"] - result["reference_accuracy"]) * 100
    return result


def samples_to_look_at(reference: list[np.ndarray], actual: list[np.ndarray], labels: np.ndarray | None = None,
                       largest: int = 10) -> dict:
    """Indices (into the evaluation inputs) of the samples whose top-1 class flipped, and of the `largest`
    samples by relative error, with what each side said."""
    ref, out = _per_sample(reference), _per_sample(actual)
    rel = np.linalg.norm(out - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-30)
    worst = np.argsort(-rel, kind="stable")[:largest]
    result = {"largest_drift": [{"index": int(i), "rel_l2": float(rel[i])} for i in worst], "flipped": []}
    first_ref, first_out = np.asarray(reference[0]), np.asarray(actual[0])
    if first_ref.ndim == 2 and first_ref.shape[1] > 1:
        top_ref, top_out = np.argmax(first_ref, 1), np.argmax(first_out, 1)
        for i in np.flatnonzero(top_ref != top_out):
            entry = {"index": int(i), "reference_top1": int(top_ref[i]), "top1": int(top_out[i])}
            if labels is not None:
                entry["label"] = int(np.asarray(labels).reshape(-1)[i])
            result["flipped"].append(entry)
    return result
