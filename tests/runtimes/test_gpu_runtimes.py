"""The GPU paths: ONNX Runtime's TensorRT provider is a runtime of its own that only CUDA targets run; on a host
without it (or without a GPU) its rows are unavailable with the reason, never silently dropped or run on the CPU."""
import pytest

from deploycmp import runtimes
from deploycmp.core.errors import Unavailable
from deploycmp.measure.bench import plan
from deploycmp.measure.row import precheck
from deploycmp.measure.targets import BUILTIN
from deploycmp.runtimes import onnxruntime_tensorrt as trt


def _manifest() -> dict:
    onnx = {"id": "onnx-fp16", "path": "onnx-fp16", "format": "onnx", "quantization": "fp16", "status": "ok",
            "dynamic_batch": True}
    return {"model": {"name": "m", "framework": "torch"}, "artifacts": [onnx]}


def test_only_cuda_targets_run_the_tensorrt_provider():
    assert runtimes.devices("onnxruntime-trt") == ("cuda",) and "onnxruntime-trt" in runtimes.on_gpu()
    rows = plan(_manifest(), list(BUILTIN.values()), [1], None)
    by_target = {}
    for r in rows:
        by_target.setdefault(r["target"], set()).add(r["runtime"])
    assert by_target == {"server-cpu": {"onnxruntime"}, "mobile-cpu": {"onnxruntime"},
                         "gpu": {"onnxruntime", "onnxruntime-trt"}}


def test_without_a_gpu_the_rows_say_why(tmp_path):
    from deploycmp.core import gpu

    if gpu.names():
        pytest.skip("this host has a GPU")
    for row in plan(_manifest(), [BUILTIN["gpu"]], [1], None):
        assert precheck(row, tmp_path) == ("unavailable", "target gpu: no CUDA GPU on this host (nvidia-smi lists none)")


def test_the_provider_missing_is_unavailable_not_a_cpu_fallback(tmp_path):
    import onnxruntime as ort

    if trt.PROVIDER in ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT")
    with pytest.raises(Unavailable, match="has no TensorrtExecutionProvider"):
        trt.load({"id": "onnx-fp16", "main_file": "m.onnx", "quantization": "fp16"}, tmp_path, 1, "cuda")
    with pytest.raises(Unavailable, match="NVIDIA GPUs only"):
        trt.load({"id": "onnx-fp16", "main_file": "m.onnx"}, tmp_path, 1, "cpu")
