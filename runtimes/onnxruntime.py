"""ONNX models on ONNX Runtime's CPU execution provider."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.base import Session

NAME = "onnxruntime"
FORMATS = ("onnx",)
REQUIRES = ("onnxruntime",)


class OrtSession(Session):
    def __init__(self, sess, threads: int):
        import onnxruntime

        self.sess = sess
        self._version = onnxruntime.__version__
        self._threads = threads
        self.input_name = sess.get_inputs()[0].name
        self.output_names = [o.name for o in sess.get_outputs()]

    def info(self) -> dict:
        return {"runtime": NAME, "version": self._version, "threads": self._threads,
                "providers": self.sess.get_providers(), "device": "cpu"}

    def prepare(self, x: np.ndarray):
        return {self.input_name: np.ascontiguousarray(x, dtype=np.float32)}

    def run(self, prepared):
        return self.sess.run(self.output_names, prepared)

    def to_numpy(self, raw) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in raw]


def load(artifact: dict, run_dir, threads: int) -> OrtSession:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(Path(run_dir) / artifact["main_file"]), opts, providers=["CPUExecutionProvider"])
    return OrtSession(sess, threads)
