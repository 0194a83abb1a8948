"""The Keras source model wrapped once in tf.function (graph mode, jit_compile=False) with a fixed input
signature, traced at load: what a TensorFlow user does to leave eager mode without exporting anything.
Opt-in: only targets whose `runtimes` list names it run it."""
from __future__ import annotations

import numpy as np

from runtimes.base import Session

NAME = "tf-function"
FORMATS = ("eager",)
FRAMEWORK = "keras"  # runs the eager artifact of a Keras source only
REQUIRES = ("tensorflow", "keras")
DEVICES = ("cpu", "cuda")
OPT_IN = True  # not run by targets without a runtimes list (server-cpu ...): name it in a target's runtimes


class TfFunctionSession(Session):
    def __init__(self, model, input_shape, threads: int, device: str):
        import keras
        import tensorflow as tf

        self.model, self._tf, self._threads, self._keras = model, tf, threads, keras.__version__
        self.device = device
        # one trace for every batch size: the batch axis is free (load does not know the row's batch), the rest
        # of the shape is the model's; tracing happens here, in the load phase, never in the timed calls
        self.spec = tf.TensorSpec([None, *input_shape[1:]], tf.float32, name="x")
        self.fn = tf.function(lambda x: model(x, training=False), input_signature=[self.spec], jit_compile=False,
                              reduce_retracing=False)
        self.fn.get_concrete_function()

    def info(self) -> dict:
        return {"runtime": NAME, "version": self._keras, "tensorflow": self._tf.__version__, "threads": self._threads,
                "device": self.device, "input_signature": [None if d is None else int(d) for d in self.spec.shape],
                "traces": self.fn.experimental_get_tracing_count(),
                "call": "tf.function(lambda x: model(x, training=False), input_signature=..., jit_compile=False)(x), "
                        "traced once at load"}

    def prepare(self, x: np.ndarray):
        return self._tf.constant(x)

    def run(self, prepared):
        return self.fn(prepared)

    def to_numpy(self, raw) -> list[np.ndarray]:
        from toolkit.keras_source import outputs_to_numpy

        return outputs_to_numpy(raw)

    def synchronize(self) -> None:
        from toolkit.keras_source import synchronize

        synchronize(self.device)


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> TfFunctionSession:
    from toolkit.keras_source import check_device, load_source, set_threads

    set_threads(threads)
    check_device(device)
    model = load_source(run_dir, artifact["model"], artifact["main_file"])
    return TfFunctionSession(model, artifact["model"]["input_shape"], threads, device)
