"""Every ONNX file deploycmp writes is checked before its artifact is ok: onnx.checker's full check (the graph
against the operator schemas of its opsets, with strict shape inference) and a load by ONNX Runtime's CPU
provider, the runtime that reads it next. A file either of them rejects is a failed export with their message,
never an artifact that only fails once it is benchmarked."""
from __future__ import annotations

from pathlib import Path


def first_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:limit]}"


def check(path: Path, what: str) -> dict:
    """Raises RuntimeError naming `what` (the file's role: "the int8 file", "the fp32 export") when the file is
    invalid; returns what was checked, for the manifest."""
    import onnx
    import onnxruntime

    try:
        onnx.checker.check_model(str(path), full_check=True)  # by path: external data and files over 2 GB too
    except Exception as e:
        raise RuntimeError(f"{what} is not a valid ONNX model (onnx.checker): {first_line(e)}") from None
    try:
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise RuntimeError(f"{what} does not load in ONNX Runtime: {first_line(e)}") from None
    return {"onnx_checker": "full_check", "onnxruntime_load": onnxruntime.__version__}
