"""Input data for drift, accuracy and latency: seeded random tensors, a .npz with x (and optional y), an image
folder, or scikit-learn's labeled handwritten digits. Images are resized to the model's input and preprocessed
the way the model expects (ImageNet mean/std for torchvision, keras.applications' preprocess_input, or flags)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from toolkit.errors import UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


DIGITS_HELD_OUT = 500  # --data digits draws from the last 500 of the 1,797 digits; the rest is for training


def load(data: str, shape: list[int], samples: int, seed: int = 0, layout: str | None = "NCHW",
         preprocess: dict | None = None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(inputs, labels or None, record for the manifest); inputs are float32, samples first, in `shape[1:]`."""
    if samples < 1:
        raise UsageError(f"--samples must be at least 1, not {samples}")
    per_sample = tuple(shape[1:])
    if data == "random":
        x = np.random.default_rng(seed).standard_normal((samples, *per_sample), dtype=np.float32)
        y, info = None, {"kind": "random", "seed": seed, "distribution": "standard normal"}
    elif data == "digits":
        x, y, info = _digits(per_sample, samples, layout, preprocess)
    elif data.endswith(".npz"):
        x, y, info = _npz(data, per_sample, samples)
    elif Path(data).is_dir():
        x, y, info = _image_folder(Path(data), per_sample, samples, layout, preprocess)
    else:
        raise UsageError(f"--data {data!r}: expected 'random', 'digits', an image folder or a .npz file")
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


def _geometry(per_sample: tuple, layout: str | None) -> tuple[int, int, int]:
    """(channels, height, width) of an image model's input."""
    if len(per_sample) != 3 or layout not in ("NCHW", "NHWC"):
        raise UsageError(f"image data needs an image model input (N,C,H,W or N,H,W,C), not {per_sample}")
    return per_sample if layout == "NCHW" else (per_sample[2], per_sample[0], per_sample[1])


def to_model_input(images: list, per_sample: tuple, layout: str, preprocess: dict | None) -> np.ndarray:
    """PIL images -> float32 model inputs: resized (bilinear), in the model's channels and layout, preprocessed:
    mean/std on [0, 1] values, a keras.applications preprocess_input on [0, 255] values, or [0, 1] as is."""
    from PIL import Image

    c, h, w = _geometry(per_sample, layout)
    arr = np.stack([np.asarray(img.convert("RGB" if c == 3 else "L").resize((w, h), Image.BILINEAR), np.float32)
                    .reshape(h, w, c) for img in images])
    kind = (preprocess or {}).get("kind")
    if kind == "keras":
        import importlib

        arr = np.asarray(importlib.import_module(preprocess["module"]).preprocess_input(arr), np.float32)
    else:
        arr = arr / 255.0
        if kind == "mean_std":  # per channel; a 3-value mean/std on a 1-channel input uses its first value
            mean, std = (np.array(preprocess[k], np.float32) for k in ("mean", "std"))
            arr = (arr - (mean[:c] if mean.size > c else mean)) / (std[:c] if std.size > c else std)
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2) if layout == "NCHW" else arr, dtype=np.float32)


def digits(part: str, per_sample: tuple, layout: str | None, preprocess: dict | None, samples: int | None = None):
    """scikit-learn's handwritten digits as model inputs and labels. part "held_out": the last DIGITS_HELD_OUT
    images, where --data digits draws from; part "train": the others, for fine-tuning a model to test."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    cut = len(d.images) - DIGITS_HELD_OUT
    images, labels = (d.images[cut:], d.target[cut:]) if part == "held_out" else (d.images[:cut], d.target[:cut])
    images, labels = images[:samples], labels[:samples]
    pil = [Image.fromarray(np.uint8(np.round(im * 255 / 16))) for im in images]  # 0..16 gray levels -> 8-bit
    return to_model_input(pil, per_sample, layout, preprocess), labels.astype(np.int64)


def _digits(per_sample: tuple, samples: int, layout: str | None, preprocess: dict | None):
    x, y = digits("held_out", per_sample, layout, preprocess, samples)
    info = {"kind": "digits", "source": "sklearn.datasets.load_digits", "held_out": DIGITS_HELD_OUT,
            "classes": list(range(10)), "preprocess": preprocess}
    return x, y, info


def _image_folder(root: Path, per_sample: tuple, samples: int, layout: str | None, preprocess: dict | None):
    """Images resized to the model's input and preprocessed; sub-folders are classes (as torchvision's ImageFolder)."""
    from PIL import Image

    _geometry(per_sample, layout)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"--data {root}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    classes = sorted({p.parent.name for p in files if p.parent != root})
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.permutation(len(files))[:samples])]
    x = to_model_input([Image.open(p) for p in files], per_sample, layout, preprocess)
    y = np.array([classes.index(p.parent.name) for p in files]) if classes and all(p.parent != root for p in files) else None
    return x, y, {"kind": "image-folder", "path": str(root), "classes": classes, "preprocess": preprocess}


IMAGENET = {"kind": "mean_std", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "source": "ImageNet"}


def parse_preprocess(mean: str | None, std: str | None) -> dict | None:
    """--mean/--std (comma-separated, on [0, 1] pixel values) as a preprocessing record, or None."""
    if mean is None and std is None:
        return None
    try:
        m = [float(v) for v in (mean or "0").split(",")]
        s = [float(v) for v in (std or "1").split(",")]
    except ValueError:
        raise UsageError(f"--mean/--std: expected comma-separated numbers, got {mean!r} / {std!r}") from None
    if any(v <= 0 for v in s):
        raise UsageError(f"--std values must be positive, got {std}")
    return {"kind": "mean_std", "mean": m, "std": s, "source": "--mean/--std"}


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
