"""The precision a row computed in: read back from the runtime where it reports it (OpenVINO's compiled model,
TF32 on GPUs), else what the artifact's quantization mode makes it compute in."""
from __future__ import annotations

# what each quantization mode computes in on a runtime that does not change it on its own
DECLARED = {"none": "fp32", "bf16": "bf16", "fp16": "fp16", "dynamic": "int8 weights, int8 activations quantized at run time",
            "int8": "int8 (float where the quantizer left ops)"}


def computes_in(runtime_info: dict, quantization: str | None) -> dict:
    if runtime_info.get("computes_in"):
        return {"precision": runtime_info["computes_in"], "how": "read back from the runtime"}
    return {"precision": DECLARED.get(quantization or "none", quantization),
            "how": "from the artifact's quantization mode (the runtime does not report it)"}
