"""ExecuTorch programs (.pte) on ExecuTorch's Python runtime, with the XNNPACK delegate the exporter lowered to.
Threads: the runtime's shared thread pool is reset to the target's thread count before the program loads."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deploycmp.runtimes.base import Session, TensorMeta

NAME = "executorch"
FORMATS = ("executorch",)
REQUIRES = ("executorch",)
ON_DEVICE = True
IMPORTS = ("executorch.runtime", "executorch.extension.pybindings.portable_lib")  # torch comes with them


# ExecuTorch's ScalarType codes (c10) for the dtypes deploycmp feeds
SCALAR_TYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 11: "bool", 15: "bfloat16"}


class ExecuTorchSession(Session):
    def __init__(self, method, threads: int, version: str, inputs: list[dict]):
        """inputs: the source's input specs; a program's inputs are forward()'s, by position, without names."""
        import torch

        self.method, self._torch, self._version = method, torch, version
        meta = method.metadata
        self.meta, self.bf16 = [], set()
        for i in range(meta.num_inputs()):
            t = meta.input_tensor_meta(i)
            name = inputs[i]["name"] if i < len(inputs) else f"input_{i}"
            dtype = SCALAR_TYPES.get(int(t.dtype()), str(t.dtype()))
            self.meta.append(TensorMeta(name, "float32" if dtype == "bfloat16" else dtype, [int(d) for d in t.sizes()]))
            if dtype == "bfloat16":  # fed as float32 (numpy has no bfloat16), cast when made a tensor
                self.bf16.add(name)
        self._threads = threads

    def info(self) -> dict:
        from executorch.extension.pybindings import portable_lib

        return {"runtime": NAME, "version": self._version, "threads": portable_lib._threadpool_get_thread_count(),
                "device": "cpu", "delegate": "XNNPACK", "inputs": {m.name: {"dtype": m.dtype, "shape": m.shape} for m in self.meta}}

    def input_metadata(self):
        return self.meta

    def prepare_native(self, feed: dict):
        torch = self._torch
        tensors = [torch.from_numpy(np.ascontiguousarray(feed[m.name])) for m in self.meta]
        return tuple(t.to(torch.bfloat16) if m.name in self.bf16 else t for t, m in zip(tensors, self.meta))

    def run(self, prepared):
        return self.method.execute(prepared)

    def to_numpy(self, raw) -> dict:
        from deploycmp.core.outputs import flatten

        return flatten(list(raw))


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> ExecuTorchSession:
    import importlib.metadata as md

    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)  # the only thread control the Python runtime offers
    program = Runtime.get().load_program(Path(run_dir) / artifact["main_file"])
    return ExecuTorchSession(program.load_method("forward"), threads, md.version("executorch"), artifact["model"]["inputs"])
