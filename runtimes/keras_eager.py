"""The Keras source model called eagerly (model(x, training=False)): the reference row of a Keras source."""
from __future__ import annotations

from deploycmp.runtimes.base import Session, spec_metadata

NAME = "keras"
FORMATS = ("eager",)
FRAMEWORK = "keras"  # runs the eager artifact of a Keras source only
REQUIRES = ("tensorflow", "keras")
DEVICES = ("cpu", "cuda")


class KerasSession(Session):
    """Runs the Keras source model; subclasses (keras-predict, tf-function) change only how it is called."""

    name, call = NAME, "model(x, training=False), eager"

    def __init__(self, model, threads: int, device: str, inputs: list[dict]):
        import keras
        import tensorflow as tf

        self.model, self._tf, self._threads, self._keras = model, tf, threads, keras.__version__
        self.device, self.inputs = device, inputs

    def info(self) -> dict:
        return {"runtime": self.name, "version": self._keras, "tensorflow": self._tf.__version__,
                "threads": self._threads, "device": self.device, "call": self.call}

    def input_metadata(self):
        return spec_metadata(self.inputs)

    def prepare_native(self, feed: dict):
        tensors = [self._tf.constant(feed[i["name"]]) for i in self.inputs]
        return tensors[0] if len(tensors) == 1 else tensors

    def run(self, prepared):
        return self.model(prepared, training=False)

    def synchronize(self) -> None:
        from deploycmp.sources.keras import synchronize

        synchronize(self.device)


def load_model(artifact: dict, run_dir, threads: int, device: str):
    """The Keras source model of an eager artifact, with TensorFlow's thread pools set and the device checked."""
    from deploycmp.sources.keras import check_device, load_source, set_threads

    set_threads(threads)
    check_device(device)
    return load_source(run_dir, artifact["model"], artifact["main_file"])


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> KerasSession:
    return KerasSession(load_model(artifact, run_dir, threads, device), threads, device, artifact["model"]["inputs"])
