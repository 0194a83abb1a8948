"""ONNX models on ONNX Runtime: the CPU execution provider, or the CUDA one (onnxruntime-gpu) on a GPU target."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deploycmp.core.errors import Unavailable
from deploycmp.core.specs import ONNX_TYPES
from deploycmp.runtimes.base import Session, TensorMeta

NAME = "onnxruntime"
FORMATS = ("onnx", "onnx-fused")
REQUIRES = ("onnxruntime",)
PREWARM = False  # importing it starts a thread: its rows start fresh (core.prewarm)
DEVICES = ("cpu", "cuda")
ON_DEVICE = True  # ONNX Runtime Mobile runs the same files on phones
# what `bench --tune` may change (first value: what deploycmp runs untuned, ONNX Runtime's recommended settings for
# latency): graph optimization level, and running independent nodes in parallel (inter-op threads = the row's)
TUNE = {"graph_optimization": ("all", "extended", "basic"), "execution_mode": ("sequential", "parallel")}

class OrtSession(Session):
    def __init__(self, sess, threads: int, device: str):
        import onnxruntime

        self.sess, self.device = sess, device
        self._version = onnxruntime.__version__
        self._threads = threads
        self.output_names = [o.name for o in sess.get_outputs()]
        self.inputs = [TensorMeta(i.name, ONNX_TYPES.get(i.type, i.type), [d if isinstance(d, int) else None for d in i.shape])
                       for i in sess.get_inputs()]

    def info(self) -> dict:
        out = {"runtime": NAME, "version": self._version, "threads": self._threads,
               "providers": self.sess.get_providers(), "device": self.device}
        cuda = self.sess.get_provider_options().get("CUDAExecutionProvider") or {}
        if cuda.get("use_tf32") == "1":  # the CUDA provider's default: float32 matmuls and convolutions in TF32
            out["computes_in"] = "fp32 with TF32 matmuls and convolutions"
            out["notes"] = ["ONNX Runtime's CUDA provider computes float32 matmuls and convolutions in TF32 by default "
                            "(provider option use_tf32=1)"]
        return out

    def input_metadata(self):
        return self.inputs

    def prepare_native(self, feed: dict):
        return {k: np.require(a, requirements="C") for k, a in feed.items()}  # ascontiguousarray makes 0-d 1-d

    def run(self, prepared):
        return self.sess.run(self.output_names, prepared)

    def to_numpy(self, raw) -> dict:
        return dict(zip(self.output_names, raw))

    # run() returns host numpy arrays, so it has already waited for the device: nothing to synchronize


def session_options(threads: int, options: dict | None = None):
    """ONNX Runtime's session options for a row: its threads, and the TUNE knobs (untuned: every graph
    optimization, sequential execution with one inter-op thread)."""
    import onnxruntime as ort

    options = options or {}
    parallel = options.get("execution_mode") == "parallel"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = threads if parallel else 1
    opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                            "ORT_ENABLE_" + options.get("graph_optimization", "all").upper())
    return opts


def load(artifact: dict, run_dir, threads: int, device: str = "cpu", options: dict | None = None) -> OrtSession:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise Unavailable(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
        providers.insert(0, "CUDAExecutionProvider")

    sess = ort.InferenceSession(str(Path(run_dir) / artifact["main_file"]), session_options(threads, options),
                                providers=providers)
    if device == "cuda" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise Unavailable(f"onnxruntime could not start its CUDA provider (providers: {sess.get_providers()})")
    return OrtSession(sess, threads, device)
