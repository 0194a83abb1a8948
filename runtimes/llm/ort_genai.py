"""ONNX Runtime GenAI on the CPU provider, as its examples run it: og.Model on the folder (genai_config.json with
the session's intra-op threads set to the row's), a Generator per request with greedy search, append_tokens for the
prompt (which runs the prefill), generate_next_token for each new token (which runs the decode step of the token
before it, then picks the next)."""
from __future__ import annotations

import json
from pathlib import Path

NAME = "onnxruntime-genai"
STACK = "ONNX Runtime GenAI"
FORMATS = ("ort-genai",)
REQUIRES = ("onnxruntime_genai",)


class Session:
    def __init__(self, og, model, threads: int):
        self.og, self.model, self.threads, self.generator = og, model, threads, None

    def _generator(self, max_length: int):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=max_length, do_sample=False)
        return self.og.Generator(self.model, params)

    def prefill(self, ids: list[int], max_length: int) -> int:
        import numpy as np

        self.generator = None  # the last request's cache goes before the next is allocated
        self.generator = self._generator(max_length)
        self.generator.append_tokens(np.asarray([ids], dtype=np.int32))
        self.generator.generate_next_token()
        return int(self.generator.get_next_tokens()[0])

    def step(self) -> int:
        self.generator.generate_next_token()
        return int(self.generator.get_next_tokens()[0])

    def logits(self, ids: list[int]):
        import numpy as np

        self.generator = None
        generator = self._generator(len(ids))
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        return np.asarray(generator.get_output("logits"), dtype=np.float32)[0]

    def info(self) -> dict:
        import importlib.metadata as md

        return {"runtime": NAME, "onnxruntime_genai": md.version("onnxruntime-genai"), "threads": self.threads,
                "provider": "cpu"}


def load(folder: Path, artifact: dict, threads: int) -> Session:
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    return Session(og, og.Model(config), threads)
