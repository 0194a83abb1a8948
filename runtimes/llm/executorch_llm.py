"""An ExecuTorch LLM program (.pte from export_llm) on ExecuTorch's Python runtime, driven the way its LLM runner
(TextLLMRunner's prefiller and token generator) drives it: forward(tokens, input_pos) on the KV cache held inside
the program, the prompt in chunks of at most the exported prefill length, then one token per call; greedy.
The program returns the last position's logits only, so the teacher-forced logits are read one token at a time.
Threads: XNNPACK's shared thread pool, reset to the row's thread count before the program loads."""
from __future__ import annotations

from pathlib import Path

NAME = "executorch"
STACK = "ExecuTorch (XNNPACK)"
FORMATS = ("executorch-llm",)
REQUIRES = ("executorch",)


class Session:
    def __init__(self, torch, method, threads: int, chunk: int, context: int):
        self.torch, self.method, self.threads, self.chunk, self.context = torch, method, threads, chunk, context
        self.pos, self.last = 0, None

    def _forward(self, ids: list[int]):
        torch = self.torch
        out = self.method.execute([torch.tensor([ids], dtype=torch.long), torch.tensor([self.pos], dtype=torch.long)])
        self.pos += len(ids)
        return out[0].reshape(-1)

    def prefill(self, ids: list[int], max_length: int) -> int:
        if max_length > self.context:
            raise ValueError(f"{max_length} positions asked; the program's KV cache holds {self.context}")
        self.pos = 0  # a fresh request: positions from 0, the cache entries past them are masked
        for start in range(0, len(ids), self.chunk):
            logits = self._forward(ids[start:start + self.chunk])
        self.last = int(logits.argmax())
        return self.last

    def step(self) -> int:
        self.last = int(self._forward([self.last]).argmax())
        return self.last

    def logits(self, ids: list[int]):
        import numpy as np

        self.pos = 0
        return np.stack([self._forward([t]).float().numpy() for t in ids]).astype(np.float32)

    def info(self) -> dict:
        import importlib.metadata as md

        from executorch.extension.pybindings import portable_lib

        return {"runtime": NAME, "executorch": md.version("executorch"), "delegate": "XNNPACK",
                "threads": portable_lib._threadpool_get_thread_count(), "prefill_chunk": self.chunk,
                "context": self.context}


def load(folder: Path, artifact: dict, threads: int) -> Session:
    import torch

    # the custom SDPA/KV-cache ops and the quantized kernels the program calls are registered by these imports
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    import executorch.kernels.quantized  # noqa: F401
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(threads)
    program = Runtime.get().load_program(Path(folder) / Path(artifact["main_file"]).name)
    method = program.load_method("forward")
    chunk = int(method.metadata.input_tensor_meta(0).sizes()[1])
    return Session(torch, method, threads, chunk, int(artifact["context"]))
