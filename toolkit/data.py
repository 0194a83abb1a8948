"""Input data for drift and latency: seeded random tensors, a .npz with x (and optional y), or an image folder."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from toolkit.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load(data: str, shape: list[int], samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(inputs, labels or None, record for the manifest); inputs are float32, samples first, in `shape[1:]`."""
    if samples < 1:
        raise UsageError(f"--samples must be at least 1, not {samples}")
    per_sample = tuple(shape[1:])
    if data == "random":
        x = np.random.default_rng(seed).standard_normal((samples, *per_sample), dtype=np.float32)
        y, info = None, {"kind": "random", "seed": seed, "distribution": "standard normal"}
    elif data.endswith(".npz"):
        x, y, info = _npz(data, per_sample, samples)
    elif Path(data).is_dir():
        x, y, info = _image_folder(Path(data), per_sample, samples)
    else:
        raise UsageError(f"--data {data!r}: expected 'random', an image folder or a .npz file")
    info.update(samples=int(x.shape[0]), sha256=hashlib.sha256(x.tobytes()).hexdigest(), labeled=y is not None)
    return x, y, info


def _npz(path: str, per_sample: tuple, samples: int):
    if not Path(path).is_file():
        raise UsageError(f"--data file not found: {path}")
    try:
        with np.load(path) as f:
            if "x" not in f:
                raise UsageError(f"{path} has no array named 'x' (found: {', '.join(f.files) or 'none'})")
            x = np.asarray(f["x"], dtype=np.float32)[:samples]
            y = np.asarray(f["y"])[:samples] if "y" in f else None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} is not a readable .npz file: {e}") from e
    if tuple(x.shape[1:]) != per_sample:
        raise UsageError(f"{path}: x has samples of shape {tuple(x.shape[1:])}, the model takes {per_sample}")
    return x, y, {"kind": "npz", "path": str(path)}


def _image_folder(root: Path, per_sample: tuple, samples: int):
    """Images resized to the model's H x W and normalized with ImageNet mean/std; sub-folders are classes."""
    from PIL import Image

    if len(per_sample) != 3:
        raise UsageError(f"an image folder needs a model input of shape N,C,H,W (got {per_sample})")
    c, h, w = per_sample
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"--data {root}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    classes = sorted({p.parent.name for p in files if p.parent != root})
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.permutation(len(files))[:samples])]
    mean, std = np.array(IMAGENET_MEAN[:c], np.float32), np.array(IMAGENET_STD[:c], np.float32)
    xs = []
    for p in files:
        img = Image.open(p).convert("RGB" if c == 3 else "L").resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32).reshape(h, w, c) / 255.0
        xs.append(((arr - mean) / std).transpose(2, 0, 1))
    y = np.array([classes.index(p.parent.name) for p in files]) if classes and all(p.parent != root for p in files) else None
    return np.stack(xs).astype(np.float32), y, {"kind": "image-folder", "path": str(root), "classes": classes}


def split(x: np.ndarray, y: np.ndarray | None, calibration: int, seed: int = 0):
    """A fixed, seeded split into a calibration part (for int8 exporters) and an evaluation part (for metrics).

    Returns (calibration x, evaluation x, evaluation y, record); the two parts never share a sample.
    """
    n = len(x)
    if calibration < 1:
        raise UsageError(f"--calibration-samples must be at least 1, not {calibration}")
    if n < 2:
        raise UsageError(f"need at least 2 samples to split into calibration and evaluation parts, got {n}")
    n_cal = min(calibration, n // 2)
    perm = np.random.default_rng(seed).permutation(n)
    cal, ev = np.sort(perm[:n_cal]), np.sort(perm[n_cal:])
    record = {
        "seed": seed,
        "calibration": {"samples": int(len(cal)), "sha256": hashlib.sha256(x[cal].tobytes()).hexdigest()},
        "evaluation": {"samples": int(len(ev)), "sha256": hashlib.sha256(x[ev].tobytes()).hexdigest()},
    }
    return x[cal], x[ev], (y[ev] if y is not None else None), record
