"""What the three PyTorch runtimes share: threads, tensor conversion, a no-grad call."""
from __future__ import annotations

import numpy as np

from runtimes.base import Session


def outputs_to_numpy(raw) -> list[np.ndarray]:
    """Flatten a model's return value (tensor, tuple, list, dict) into float32 numpy arrays."""
    import torch

    if isinstance(raw, torch.Tensor):
        return [raw.detach().float().cpu().numpy()]
    if isinstance(raw, dict):
        raw = list(raw.values())
    if isinstance(raw, (list, tuple)):
        return [a for item in raw for a in outputs_to_numpy(item)]
    raise TypeError(f"model returned {type(raw).__name__}; expected tensors")


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel work; keep what the process has
        pass


class TorchSession(Session):
    def __init__(self, module, runtime: str):
        import torch

        self._torch = torch
        self.module = module
        self.runtime = runtime

    def info(self) -> dict:
        torch = self._torch
        return {"runtime": self.runtime, "version": torch.__version__, "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(), "device": "cpu"}

    def prepare(self, x: np.ndarray):
        return self._torch.from_numpy(np.ascontiguousarray(x))

    def run(self, prepared):
        with self._torch.inference_mode():
            return self.module(prepared)

    def to_numpy(self, raw) -> list[np.ndarray]:
        return outputs_to_numpy(raw)
