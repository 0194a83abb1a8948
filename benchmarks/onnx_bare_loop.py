"""A bare ONNX Runtime loop on one file, two session settings side by side (ONNX Runtime's defaults at 2 intra-op
threads, as the ONNX source runs it; and the onnxruntime runtime's: sequential, one inter-op thread, every graph
optimisation), in rounds: what a deploycmp row of that file should be within a few percent of.

    .venv/bin/python benchmarks/onnx_bare_loop.py MODEL.onnx 1,3,320,320
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def session(path: str, runtime_settings: bool):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 2
    o.log_severity_level = 3
    if runtime_settings:
        o.inter_op_num_threads = 1
        o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def main() -> int:
    path, shape = sys.argv[1], tuple(int(d) for d in sys.argv[2].split(","))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sessions = {"source settings": session(path, False), "runtime settings": session(path, True)}
    name = sessions["source settings"].get_inputs()[0].name
    for rnd in range(3):
        for what, s in sessions.items():
            for _ in range(5):
                s.run(None, {name: x})
            times = []
            for _ in range(40):
                t0 = time.perf_counter()
                s.run(None, {name: x})
                times.append((time.perf_counter() - t0) * 1e3)
            print(f"round {rnd} {what}: p50 {np.median(times):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
