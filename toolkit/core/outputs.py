"""One way to turn what a model or runtime returns into named numpy outputs, for every framework alike."""
from __future__ import annotations

import numpy as np


def to_array(value) -> np.ndarray:
    """A torch tensor (any device, bf16 too), a TensorFlow tensor or anything numpy takes, as a numpy array."""
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        return value.numpy()
    if hasattr(value, "numpy"):  # tf.Tensor
        return np.asarray(value.numpy())
    return np.asarray(value)


def flatten(raw, name: str = "output") -> dict[str, np.ndarray]:
    """Named outputs: a dict (Hugging Face's ModelOutput too) keeps its keys in its own order, a tuple or list
    numbers its items (output_0, output_1 ...), one tensor is `output`; nesting joins names with '.'."""
    if isinstance(raw, dict):
        out = {}
        for key, value in raw.items():
            if value is not None:
                out.update(flatten(value, str(key) if name == "output" else f"{name}.{key}"))
        return out
    if isinstance(raw, (list, tuple)):
        if len(raw) == 1:
            return flatten(raw[0], name)
        out = {}
        for i, value in enumerate(raw):
            out.update(flatten(value, f"{name}_{i}"))
        return out
    return {name: to_array(raw)}


def match(got: dict, names: list[str]) -> dict[str, np.ndarray]:
    """A runtime's outputs under the source model's output names: by name when the artifact kept them, else by
    position (converters rename outputs: output_0, Identity ...)."""
    if set(got) >= set(names):
        return {n: got[n] for n in names}
    if len(got) != len(names):
        raise ValueError(f"the artifact returns {len(got)} outputs ({', '.join(got)}); the source model returns "
                         f"{len(names)} ({', '.join(names)})")
    return dict(zip(names, [got[k] for k in numbered(list(got))]))


def numbered(keys: list[str]) -> list[str]:
    """Output names that differ only by a number (output_0 ... output_10, as onnx2tf's SavedModel signature names
    them: a dict whose order is not theirs) in the order of their numbers; any other names as they come."""
    import re

    parts = [re.fullmatch(r"(.*?)(\d+)", k) for k in keys]
    if len(keys) < 2 or not all(parts) or len({m.group(1) for m in parts}) != 1:
        return keys
    return [m.group(0) for m in sorted(parts, key=lambda m: int(m.group(2)))]
