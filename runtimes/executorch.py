"""ExecuTorch programs (.pte) on ExecuTorch's Python runtime, with the XNNPACK delegate the exporter lowered to.
Threads: the runtime's shared thread pool is reset to the target's thread count before the program loads."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.base import Session

NAME = "executorch"
FORMATS = ("executorch",)
REQUIRES = ("executorch",)
IMPORTS = ("executorch.runtime", "executorch.extension.pybindings.portable_lib")  # torch comes with them


class ExecuTorchSession(Session):
    def __init__(self, method, threads: int, version: str):
        import torch

        self.method, self._torch, self._version = method, torch, version
        meta = method.metadata
        if meta.num_inputs() != 1:
            raise ValueError(f"program takes {meta.num_inputs()} inputs; deploycmp measures single-input models")
        self.input_shape = tuple(int(d) for d in meta.input_tensor_meta(0).sizes())
        self._threads = threads

    def info(self) -> dict:
        from executorch.extension.pybindings import portable_lib

        return {"runtime": NAME, "version": self._version, "threads": portable_lib._threadpool_get_thread_count(),
                "device": "cpu", "delegate": "XNNPACK", "input_shape": list(self.input_shape)}

    def prepare(self, x: np.ndarray):
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"the .pte program takes input of shape {self.input_shape}, got {tuple(x.shape)}")
        return (self._torch.from_numpy(np.ascontiguousarray(x)),)

    def run(self, prepared):
        return self.method.execute(prepared)

    def to_numpy(self, raw) -> list[np.ndarray]:
        from runtimes.torch_common import outputs_to_numpy

        return outputs_to_numpy(list(raw))


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> ExecuTorchSession:
    import importlib.metadata as md

    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)  # the only thread control the Python runtime offers
    program = Runtime.get().load_program(Path(run_dir) / artifact["main_file"])
    return ExecuTorchSession(program.load_method("forward"), threads, md.version("executorch"))
