"""The Keras source model called eagerly (model(x, training=False)): the reference row of a Keras source."""
from __future__ import annotations

import numpy as np

from runtimes.base import Session

NAME = "keras"
FORMATS = ("eager",)
FRAMEWORK = "keras"  # runs the eager artifact of a Keras source only
REQUIRES = ("tensorflow", "keras")
DEVICES = ("cpu", "cuda")


class KerasSession(Session):
    """Runs the Keras source model; subclasses (keras-predict, tf-function) change only how it is called."""

    name, call = NAME, "model(x, training=False), eager"

    def __init__(self, model, threads: int, device: str):
        import keras
        import tensorflow as tf

        self.model, self._tf, self._threads, self._keras = model, tf, threads, keras.__version__
        self.device = device

    def info(self) -> dict:
        return {"runtime": self.name, "version": self._keras, "tensorflow": self._tf.__version__,
                "threads": self._threads, "device": self.device, "call": self.call}

    def prepare(self, x: np.ndarray):
        return self._tf.constant(x)

    def run(self, prepared):
        return self.model(prepared, training=False)

    def to_numpy(self, raw) -> list[np.ndarray]:
        from toolkit.keras_source import outputs_to_numpy

        return outputs_to_numpy(raw)

    def synchronize(self) -> None:
        from toolkit.keras_source import synchronize

        synchronize(self.device)


def load_model(artifact: dict, run_dir, threads: int, device: str):
    """The Keras source model of an eager artifact, with TensorFlow's thread pools set and the device checked."""
    from toolkit.keras_source import check_device, load_source, set_threads

    set_threads(threads)
    check_device(device)
    return load_source(run_dir, artifact["model"], artifact["main_file"])


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> KerasSession:
    return KerasSession(load_model(artifact, run_dir, threads, device), threads, device)
