"""Runtimes of language models that generate, registered by name. A runtime module declares NAME, FORMATS,
REQUIRES and STACK, and load(folder, artifact, threads) -> a session:

    session.prefill(ids, max_length) -> the first new token id (greedy): a fresh request, its cache built from ids
    session.step() -> the next token id (greedy), one decode step on the cache
    session.logits(ids) -> the next-token logits at every position of ids, [len(ids), vocab] float32 (teacher
                           forced), or None where the runtime exposes none
    session.info() -> what the runtime knows about itself (version, threads, precision)

It knows nothing of timing or drift: deploycmp.measure.generation_worker does that, the same way for every runtime."""
from __future__ import annotations

import importlib

RUNTIMES = {
    "transformers": "deploycmp.runtimes.llm.transformers_llm",
    "onnxruntime-genai": "deploycmp.runtimes.llm.ort_genai",
    "executorch": "deploycmp.runtimes.llm.executorch_llm",
}


def get(name: str):
    return importlib.import_module(RUNTIMES[name])


def for_format(fmt: str) -> list[str]:
    return [name for name in RUNTIMES if fmt in get(name).FORMATS]
