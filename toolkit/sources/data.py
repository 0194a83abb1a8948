"""Input data for drift, accuracy and latency, as feeds (input name -> array): seeded random inputs of each
input's dtype and range, a .npz with one array per input (and optional labels), an image folder, or scikit-learn's
labeled handwritten digits (as images, or for a token-id model as 64 tokens of 17 grey levels read row by row).
Images are resized to the model's input and preprocessed the way the model expects (ImageNet mean/std for
torchvision, keras.applications' preprocess_input, or flags)."""
from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import numpy as np

from deploycmp.core.errors import UsageError
from deploycmp.core.worker_memory import available_memory

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


DIGITS_HELD_OUT = 500  # --data digits draws from the last 500 of the 1,797 digits; the rest is for training


def load(data: str, inputs: list, dims: dict, samples: int, seed: int = 0, preprocess: dict | None = None,
         tokenizer=None) -> tuple[dict, np.ndarray | None, dict]:
    """(feed: input name -> samples-first array, labels or None, record for the manifest) at the named-dimension
    values `dims` (batch excluded: arrays hold `samples` samples). `tokenizer` (a Hugging Face model's) turns a
    text file into token ids."""
    from deploycmp.sources import text_data

    if samples < 1:
        raise UsageError(f"--samples must be at least 1, not {samples}")
    every = inputs
    # a constant is no data: each sample holds its value (batches and splits slice it as any input), never drawn
    inputs = [s for s in every if not s.is_constant()]
    if not inputs:
        raise UsageError(f"every input is a constant ({', '.join(f'--const {s.name}' for s in every)}): nothing varies "
                         "to measure drift on; let the data give at least one input")
    per_sample = {s.name: s.resolve({**dims, "batch": 1})[1:] for s in every}
    check_memory(every, per_sample, samples)
    if data == "random":
        rng = np.random.default_rng(seed)
        feed = {s.name: random_input(s, per_sample[s.name], samples, rng) for s in inputs}
        y, info = None, {"kind": "random", "seed": seed,
                         "distribution": "floats standard normal; integers uniform in their value range; masks ones then zeros"}
    elif data.endswith(".npz"):
        feed, y, info = _npz(data, inputs, per_sample, samples)
    elif text_data.is_text(data) and Path(data).is_file():
        feed, y, info = text_data.load(data, tokenizer, inputs, per_sample, samples)
    elif data == "digits" and token_inputs(inputs):
        feed, y, info = _digit_tokens(inputs, per_sample, samples)
    elif data == "digits" or Path(data).is_dir():
        image = _image_input(inputs, data)
        if data == "digits":
            x, y, info = _digits(per_sample[image.name], samples, image.layout, preprocess)
        else:
            x, y, info = _image_folder(Path(data), per_sample[image.name], samples, image.layout, preprocess)
        feed = {image.name: x}
    else:
        raise UsageError(f"--data {data!r}: expected 'random', 'digits', an image folder, a .npz file or a text file "
                         f"({', '.join(text_data.SUFFIXES)})")
    found = samples_in(feed)
    feed = {s.name: feed[s.name] if s.name in feed else constant_column(s, per_sample[s.name], found) for s in every}
    if len(inputs) < len(every):
        info["constants"] = {s.name: s.value for s in every if s.is_constant()}
    if found < samples:
        _warn(info, f"--data {data} holds {found} samples, fewer than the {samples} asked (--samples + "
                    f"--calibration-samples): the split uses the {found} there are")
    info.update(samples=found, sha256=feed_sha256(feed), labeled=y is not None)
    return feed, y, info


_SHOWN: set[str] = set()


def _warn(info: dict, text: str) -> None:
    """A warning about the data: on stderr now (once per process), and in the manifest's data record (reports show it)."""
    info.setdefault("warnings", []).append(text)
    if text not in _SHOWN:
        _SHOWN.add(text)
        print(f"warning: {text}", file=sys.stderr, flush=True)


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000


def check_memory(inputs: list, per_sample: dict, samples: int) -> None:
    """Refuse, before allocating anything, inputs that need more memory than this machine has available."""
    from deploycmp.core.specs import describe, numpy_dtype

    need = samples * sum(numpy_dtype(s.dtype).itemsize * math.prod(per_sample[s.name]) for s in inputs)
    available = available_memory()
    if available is not None and need > available:
        raise UsageError(f"{samples} samples (--samples + --calibration-samples) of {describe(inputs)} at "
                         f"{', '.join(f'{s.name}:{list(per_sample[s.name])}' for s in inputs)} per sample need "
                         f"{_size(need)} of memory, this machine has {_size(available)} available: use fewer samples "
                         f"or smaller inputs")


def check_labels(labels, outputs: dict, data: str) -> None:
    """Labels are class indices into the model's logits ([batch, classes] output): refuse any outside [0, classes)."""
    logits = [a for a in outputs.values() if a.ndim == 2 and a.shape[1] > 1]
    if labels is None or len(labels) == 0 or len(logits) != 1:
        return
    classes = logits[0].shape[1]
    if labels.min() < 0 or labels.max() >= classes:
        raise UsageError(f"--data {data}: labels run from {labels.min()} to {labels.max()}, the model has {classes} "
                         f"classes (labels 0 to {classes - 1})")


def samples_in(feed: dict) -> int:
    return int(len(next(iter(feed.values()))))


def feed_sha256(feed: dict) -> str:
    h = hashlib.sha256()
    for name, a in feed.items():
        h.update(name.encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def constant_column(spec, per_sample: tuple, samples: int) -> np.ndarray:
    """A constant as a feed holds it: its value in every element, once per sample (0-d: one value per sample)."""
    from deploycmp.core.specs import numpy_dtype

    return np.full((samples, *per_sample), spec.value, dtype=numpy_dtype(spec.dtype))


def random_input(spec, per_sample: tuple, samples: int, rng) -> np.ndarray:
    """Seeded values of the input's own dtype: floats standard normal, integers uniform in the value range, and
    attention-mask-like inputs (an integer or bool input named *mask*) ones then zeros, lengths drawn per sample."""
    from deploycmp.core.specs import FLOAT_DTYPES, numpy_dtype

    shape, dtype = (samples, *per_sample), numpy_dtype(spec.dtype)
    if spec.dtype in FLOAT_DTYPES:
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    if spec.is_mask() and len(shape) >= 2:
        length = shape[1]
        keep = rng.integers(max(1, length // 2), length + 1, size=samples)
        mask = np.arange(length)[None, :] < keep[:, None]
        return np.broadcast_to(mask.reshape(samples, length, *([1] * (len(shape) - 2))), shape).astype(dtype)
    if spec.dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    low, high = spec.value_range or (0, 256)
    return rng.integers(low, high, size=shape).astype(dtype)


def _image_input(inputs: list, data: str):
    floats = [s for s in inputs if s.layout in ("NCHW", "NHWC")]
    if len(inputs) != 1 or not floats:
        raise UsageError(f"--data {data}: images feed a model with one image input (NCHW or NHWC); this model takes "
                         f"{', '.join(s.name for s in inputs)}: give a .npz with one array per input name")
    return floats[0]


def _npz(path: str, inputs: list, per_sample: dict, samples: int):
    """One array per input name (a single-input model may call it `x`), optional `labels` (or `y`)."""
    from deploycmp.core.specs import numpy_dtype

    if not Path(path).is_file():
        raise UsageError(f"--data file not found: {path}")
    try:
        with np.load(path) as f:
            files = set(f.files)
            aliases = {inputs[0].name: "x"} if len(inputs) == 1 else {}
            feed = {}
            for s in inputs:
                key = s.name if s.name in files else aliases.get(s.name)
                if key not in files:
                    raise UsageError(f"{path} has no array named {s.name!r} (found: {', '.join(sorted(files)) or 'none'})")
                feed[s.name] = np.asarray(f[key])[:samples]
            label_key = next((k for k in ("labels", "y") if k in files), None)
            y = np.asarray(f[label_key])[:samples] if label_key else None
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"{path} is not a readable .npz file: {e}") from e
    if y is not None:
        if y.ndim != 1 or y.dtype.kind not in "iuf" or not np.all(np.isfinite(y) & (y == np.round(y)) & (y >= 0)):
            raise UsageError(f"{path}: {label_key} must hold one class index per sample (integers >= 0), not "
                             f"{y.dtype}{list(y.shape)}" + (f" from {y.min()} to {y.max()}" if y.size and y.dtype.kind in "iuf" else ""))
        y = y.astype(np.int64)
    for s in inputs:
        a = feed[s.name]
        if tuple(a.shape[1:]) != tuple(per_sample[s.name]):
            raise UsageError(f"{path}: {s.name} has samples of shape {tuple(a.shape[1:])}, the model takes "
                             f"{tuple(per_sample[s.name])}")
        if a.dtype != numpy_dtype(s.dtype):
            kinds = {a.dtype.kind, numpy_dtype(s.dtype).kind}
            if not (kinds <= {"f"} or kinds <= {"i", "u", "b"}):
                raise UsageError(f"{path}: {s.name} is {a.dtype}, the model takes {s.dtype}")
            feed[s.name] = a = a.astype(numpy_dtype(s.dtype))
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = int(a.size - np.isfinite(a).sum())
            raise UsageError(f"{path}: {s.name} holds {bad} NaN or infinite value(s): drift cannot be measured on "
                             f"them; give finite inputs")
    if len({len(a) for a in feed.values()} | ({len(y)} if y is not None else set())) != 1:
        raise UsageError(f"{path}: the input arrays (and labels) hold different numbers of samples")
    return feed, y, {"kind": "npz", "path": str(path)}


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

    images, labels = _digits_part(part, samples)
    pil = [Image.fromarray(np.uint8(np.round(im * 255 / 16))) for im in images]  # 0..16 gray levels -> 8-bit
    return to_model_input(pil, per_sample, layout, preprocess), labels.astype(np.int64)


def _digits(per_sample: tuple, samples: int, layout: str | None, preprocess: dict | None):
    x, y = digits("held_out", per_sample, layout, preprocess, samples)
    info = {"kind": "digits", "source": "sklearn.datasets.load_digits", "held_out": DIGITS_HELD_OUT,
            "classes": list(range(10)), "preprocess": preprocess}
    return x, y, info


# --data digits for a token-id model: each 8x8 digit read row by row, its 64 grey levels (0 to 16) as token ids
DIGIT_TOKENS = 64
DIGIT_TOKEN_OFFSET = 1  # token id = grey level + 1 (1 to 17), so that 0 stays the padding id ([PAD] in BERT)
DIGIT_VOCABULARY = 17 + DIGIT_TOKEN_OFFSET  # a model needs at least token ids 0 to 17
DIGITS_AS_TOKENS = "scikit-learn handwritten digits, 8x8 images read row by row as 64 tokens of 17 grey levels"


def follows_shape(data: str, inputs: list) -> bool:
    """Data made anew at each point of a --shape sweep: random inputs, and texts or the digits for a token-id model
    (padded or truncated to each sequence length)."""
    from deploycmp.sources import text_data

    return data == "random" or (token_inputs(inputs) and (data == "digits" or text_data.is_text(data)))


def _digits_part(part: str, samples: int | None):
    """(8x8 images with grey levels 0 to 16, labels) of scikit-learn's digits: part "held_out" is the last
    DIGITS_HELD_OUT, part "train" the others."""
    from sklearn.datasets import load_digits

    d = load_digits()
    cut = len(d.images) - DIGITS_HELD_OUT
    images, labels = (d.images[cut:], d.target[cut:]) if part == "held_out" else (d.images[:cut], d.target[:cut])
    return images[:samples], labels[:samples]


def token_inputs(inputs: list) -> bool:
    """A token-id model: every input an integer one of shape [batch, a named dimension] (a sequence), e.g.
    input_ids, attention_mask and token_type_ids."""
    from deploycmp.core.specs import FLOAT_DTYPES

    inputs = [s for s in inputs if not s.is_constant()]
    return bool(inputs) and all(s.dtype not in FLOAT_DTYPES and len(s.shape) == 2 and isinstance(s.shape[1], str)
                                for s in inputs)


def digit_tokens(part: str, length: int = DIGIT_TOKENS, samples: int | None = None):
    """(token ids, attention mask, labels) of scikit-learn's digits as sequences of `length` tokens: the 64 grey
    levels of each 8x8 image read row by row, as token ids grey level + DIGIT_TOKEN_OFFSET; a longer sequence is
    padded with token id 0 under attention mask 0, a shorter one keeps the first `length` tokens (the top rows).
    part "held_out": the last DIGITS_HELD_OUT digits, where --data digits draws from; part "train": the others."""
    images, labels = _digits_part(part, samples)
    keep = min(length, DIGIT_TOKENS)
    ids = np.zeros((len(images), length), np.int64)
    mask = np.zeros((len(images), length), np.int64)
    ids[:, :keep] = np.rint(images.reshape(len(images), DIGIT_TOKENS)[:, :keep]).astype(np.int64) + DIGIT_TOKEN_OFFSET
    mask[:, :keep] = 1
    return ids, mask, labels.astype(np.int64)


def _digit_tokens(inputs: list, per_sample: dict, samples: int):
    """The feed of a token-id model: token ids, attention mask (ones over the digit's tokens) and token types
    (zeros), from the held-out digits."""
    from deploycmp.core.specs import numpy_dtype

    lengths = {per_sample[s.name][0] for s in inputs}
    if len(lengths) != 1:
        raise UsageError(f"--data digits: token inputs of one sequence length, not {sorted(lengths)}")
    length = lengths.pop()
    masks = [s for s in inputs if s.is_mask()]
    types = [s for s in inputs if not s.is_mask() and "type" in s.name.lower()]
    ids = [s for s in inputs if s not in masks and s not in types]
    if len(ids) != 1:
        raise UsageError(f"--data digits: a token-id model takes one input of token ids (besides attention masks and "
                         f"token types); this one takes {', '.join(s.name for s in ids) or 'none'}")
    low, high = ids[0].value_range or (0, DIGIT_VOCABULARY)
    if low > 0 or high < DIGIT_VOCABULARY:
        raise UsageError(f"--data digits: the digits' tokens are ids 0 to {DIGIT_VOCABULARY - 1} (grey levels 0 to 16 "
                         f"as ids 1 to 17, 0 for padding); {ids[0].name} takes ids {low} to {high - 1}")
    x, mask, y = digit_tokens("held_out", length, samples)
    feed = {}
    for s in inputs:
        a = x if s in ids else mask if s in masks else np.zeros_like(x)
        feed[s.name] = a.astype(numpy_dtype(s.dtype))
    info = {"kind": "digits", "source": "sklearn.datasets.load_digits", "held_out": DIGITS_HELD_OUT,
            "classes": list(range(10)), "as": "tokens", "description": DIGITS_AS_TOKENS,
            "token_ids": f"grey level + {DIGIT_TOKEN_OFFSET} (ids 1 to 17); 0 is padding",
            "sequence": length, "tokens": min(length, DIGIT_TOKENS), "truncated": length < DIGIT_TOKENS,
            "padding": (f"{length - DIGIT_TOKENS} tokens of id 0 under attention mask 0" if length > DIGIT_TOKENS
                        else "none"),
            "inputs": {s.name: "token ids" if s in ids else "attention mask: 1 over the digit's tokens" if s in masks
                       else "token types: 0" for s in inputs}}
    if length < DIGIT_TOKENS:
        _warn(info, f"--data digits: sequence {length} keeps the first {length} of each digit's {DIGIT_TOKENS} tokens "
                    f"(its top {length / 8:g} rows): truncated")
    return feed, y, info


def _image_folder(root: Path, per_sample: tuple, samples: int, layout: str | None, preprocess: dict | None):
    """Images resized to the model's input and preprocessed; sub-folders are classes (as torchvision's ImageFolder).
    An image that cannot be read, or a link to a file outside the folder, is skipped with a warning and counted."""
    from PIL import Image

    _geometry(per_sample, layout)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"--data {root}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    classes = sorted({p.parent.name for p in files if p.parent != root})
    inside = root.resolve()
    images, skipped = [], []
    for i in np.random.default_rng(0).permutation(len(files)):  # drawn at random, in a fixed order
        if len(images) == samples:
            break
        p = files[i]
        if not p.resolve().is_relative_to(inside):
            skipped.append({"file": str(p.relative_to(root)), "reason": f"a link to {p.resolve()}, outside the folder"})
            continue
        try:
            with Image.open(p) as img:
                img.load()
                images.append((i, img.copy()))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            skipped.append({"file": str(p.relative_to(root)), "reason": f"not a readable image ({str(e) or type(e).__name__})"})
    info = {"kind": "image-folder", "path": str(root), "classes": classes, "preprocess": preprocess, "skipped": skipped}
    if skipped:
        shown = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3]) + ("; ..." if len(skipped) > 3 else "")
        _warn(info, f"--data {root}: skipped {len(skipped)} image(s): {shown}")
    if not images:
        raise UsageError(f"--data {root}: none of its {len(files)} image(s) could be used ({skipped[0]['reason']} ...)")
    images.sort(key=lambda t: t[0])
    files = [files[i] for i, _ in images]
    x = to_model_input([img for _, img in images], per_sample, layout, preprocess)
    y = np.array([classes.index(p.parent.name) for p in files]) if classes and all(p.parent != root for p in files) else None
    return x, y, info


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


def split(feed: dict, y: np.ndarray | None, calibration: int, seed: int = 0):
    """A fixed, seeded split into a calibration part (for int8 exporters) and an evaluation part (for metrics).

    Returns (calibration feed, evaluation feed, evaluation labels, record); the two parts never share a sample.
    """
    n = samples_in(feed)
    if calibration < 1:
        raise UsageError(f"--calibration-samples must be at least 1, not {calibration}")
    if n < 2:
        raise UsageError(f"need at least 2 samples to split into calibration and evaluation parts, got {n}")
    n_cal = min(calibration, n // 2)
    perm = np.random.default_rng(seed).permutation(n)
    cal, ev = np.sort(perm[:n_cal]), np.sort(perm[n_cal:])
    cal_feed, ev_feed = ({k: a[idx] for k, a in feed.items()} for idx in (cal, ev))
    record = {
        "seed": seed,
        "calibration": {"samples": int(len(cal)), "sha256": feed_sha256(cal_feed)},
        "evaluation": {"samples": int(len(ev)), "sha256": feed_sha256(ev_feed)},
    }
    return cal_feed, ev_feed, (y[ev] if y is not None else None), record
