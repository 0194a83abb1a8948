"""Exporters of language models that generate, registered by format name. Each takes the source model's
`save_pretrained` directory (weights, config, tokenizer) and writes an artifact a generation runtime
(deploycmp.runtimes.llm) loads.

An exporter module declares FORMAT, QUANTIZATIONS (among QUANTIZATIONS below), REQUIRES (import names), STACK (the
stack in the user's words), optionally UNSUPPORTED (mode -> why) and INSTALL_HINT, and export(source_dir, out_dir,
quantization, threads) -> dict of details (main_file, exporter info, what the quantizer did)."""
from __future__ import annotations

import importlib

FORMATS = {
    "transformers": "deploycmp.exporters.llm.transformers_llm",
    "ort-genai": "deploycmp.exporters.llm.ort_genai",
    "executorch-llm": "deploycmp.exporters.llm.executorch_llm",
}
# mode -> what it is, in the words the table and `deploycmp list` use
QUANTIZATIONS = {
    "none": "fp32 weights and compute",
    "bf16": "bf16 weights and compute",
    "int8": "int8 weights (per channel), fp32 activations",
    "int4": "int4 weights in groups of 32, fp32 activations",
    "8da4w": "int4 weights in groups of 32, int8 dynamic activations",
}
# the stacks the issue names that deploycmp does not export to yet: their rows say so
NOT_YET = {
    "litert-lm": "litert-torch's generative export to a .litertlm bundle is not driven by deploycmp yet",
    "openvino-genai": "optimum-intel's exporter needs transformers<5.6 (an environment of its own), not built yet",
    "gguf": "llama-cpp-python is built from source (9 minutes on 2 cores) in an environment of its own, not built "
            "yet",
}


def get(fmt: str):
    return importlib.import_module(FORMATS[fmt])


def unsupported_reason(fmt: str, quantization: str) -> str | None:
    if fmt in NOT_YET:
        return f"{fmt}: {NOT_YET[fmt]}"
    mod = get(fmt)
    if quantization not in mod.QUANTIZATIONS:
        return getattr(mod, "UNSUPPORTED", {}).get(quantization) or f"{fmt}: no {quantization} export"
    return None


def requirements(fmt: str, quantization: str) -> tuple[str, ...]:
    mod = get(fmt)
    return tuple(mod.REQUIRES) + (tuple(getattr(mod, "QUANTIZER", ())) if quantization != "none" else ())


def install_hint(fmt: str, missing: list[str]) -> str:
    hints = getattr(get(fmt), "INSTALL_HINT", {})
    return "; ".join(hints.get(m, f"pip install 'deploycmp[llm]' for {m}") for m in missing)
