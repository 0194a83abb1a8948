"""Keras' own batch inference loop, model.predict(x, batch_size=len(x), verbose=0), on the eager artifact of a
Keras source: what many Keras users call. Opt-in: only targets whose `runtimes` list names it run it."""
from __future__ import annotations

import numpy as np

from runtimes.base import Session

NAME = "keras-predict"
FORMATS = ("eager",)
FRAMEWORK = "keras"  # runs the eager artifact of a Keras source only
REQUIRES = ("tensorflow", "keras")
DEVICES = ("cpu", "cuda")
OPT_IN = True  # not run by targets without a runtimes list (server-cpu ...): name it in a target's runtimes


class KerasPredictSession(Session):
    def __init__(self, model, threads: int, device: str):
        import keras
        import tensorflow as tf

        self.model, self._tf, self._threads, self._keras = model, tf, threads, keras.__version__
        self.device = device

    def info(self) -> dict:
        return {"runtime": NAME, "version": self._keras, "tensorflow": self._tf.__version__, "threads": self._threads,
                "device": self.device,
                "call": "model.predict(x, batch_size=len(x), verbose=0) on a numpy batch; returns numpy"}

    def prepare(self, x: np.ndarray):
        return np.ascontiguousarray(x)  # what predict is given in practice: a numpy array

    def run(self, prepared):
        return self.model.predict(prepared, batch_size=len(prepared), verbose=0)

    def to_numpy(self, raw) -> list[np.ndarray]:
        from toolkit.keras_source import outputs_to_numpy

        return outputs_to_numpy(raw)

    def synchronize(self) -> None:
        from toolkit.keras_source import synchronize

        synchronize(self.device)


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> KerasPredictSession:
    from toolkit.keras_source import check_device, load_source, set_threads

    set_threads(threads)
    check_device(device)
    return KerasPredictSession(load_source(run_dir, artifact["model"], artifact["main_file"]), threads, device)
