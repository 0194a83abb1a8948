"""What the PyTorch source and the PyTorch runtimes share: a feed as the model's arguments, and torch's threads."""
from __future__ import annotations


def set_threads(threads: int, options: dict | None = None) -> None:
    import torch

    torch.backends.mkldnn.enabled = (options or {}).get("onednn", True)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel work; keep what the process has
        pass


PYTHON_NUMBERS = {"int": int, "float": float, "bool": bool}


def example(feed: dict, inputs: list) -> tuple:
    """A feed as the model's positional arguments, each a tensor of its spec's dtype (bf16 and fp16 too); a 0-d input
    is its one value (the spec's; the feed holds it once per sample), a Python number where forward() takes one."""
    import numpy as np
    import torch

    out = []
    for s in inputs:
        if not s.shape:
            value = s.value if s.is_constant() else np.asarray(feed[s.name]).reshape(-1)[0].item()
            out.append(PYTHON_NUMBERS[s.passed_as](value) if s.passed_as else
                       torch.tensor(value, dtype=getattr(torch, s.dtype)))
            continue
        t = torch.from_numpy(np.ascontiguousarray(feed[s.name]))
        out.append(t.to(getattr(torch, s.dtype)) if s.dtype in ("bfloat16", "float16") else t)
    return tuple(out)
