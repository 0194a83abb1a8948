"""What the three PyTorch runtimes share: threads, device placement, tensor conversion, a no-grad call."""
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


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        from toolkit.errors import Unavailable

        raise Unavailable(f"torch {torch.__version__} sees no CUDA device"
                          + ("" if torch.version.cuda else " (a CPU-only build)"))


class TorchSession(Session):
    def __init__(self, module, runtime: str, device: str = "cpu"):
        import torch

        self._torch = torch
        self.device = device
        self.module = module.to(device) if device != "cpu" and hasattr(module, "to") else module
        self.runtime = runtime
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def info(self) -> dict:
        torch = self._torch
        info = {"runtime": self.runtime, "version": torch.__version__, "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(), "device": self.device}
        if self.device == "cuda":
            info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
        return info

    def prepare(self, x: np.ndarray):
        t = self._torch.from_numpy(np.ascontiguousarray(x))
        return t.to(self.device) if self.device != "cpu" else t

    def run(self, prepared):
        with self._torch.inference_mode():
            return self.module(prepared)

    def to_numpy(self, raw) -> list[np.ndarray]:
        return outputs_to_numpy(raw)

    def synchronize(self) -> None:
        if self.device == "cuda":
            self._torch.cuda.synchronize()

    def cuda_events(self):
        if self.device != "cuda":
            return None
        return self._torch.cuda.Event(enable_timing=True), self._torch.cuda.Event(enable_timing=True)

    def device_memory_mb(self) -> float | None:
        return self._torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None
