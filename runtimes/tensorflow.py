"""TensorFlow SavedModels: tf.saved_model.load, then the serving_default signature, as TF Serving calls it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtimes.base import Session

NAME = "tensorflow"
FORMATS = ("savedmodel",)
REQUIRES = ("tensorflow",)
DEVICES = ("cpu", "cuda")


class SavedModelSession(Session):
    def __init__(self, loaded, threads: int, device: str):
        import tensorflow as tf

        self._tf, self._threads, self._loaded, self.device = tf, threads, loaded, device
        self.signature = loaded.signatures["serving_default"]
        inputs = self.signature.structured_input_signature[1]
        if len(inputs) != 1:
            raise ValueError(f"serving_default takes {len(inputs)} inputs; deploycmp measures single-input models")
        self.input_name = next(iter(inputs))

    def info(self) -> dict:
        return {"runtime": NAME, "version": self._tf.__version__, "threads": self._threads, "device": self.device,
                "signature": "serving_default"}

    def prepare(self, x: np.ndarray):
        return {self.input_name: self._tf.constant(x)}

    def run(self, prepared):
        return self.signature(**prepared)

    def to_numpy(self, raw) -> list[np.ndarray]:
        from toolkit.keras_source import outputs_to_numpy

        return outputs_to_numpy(raw)

    def synchronize(self) -> None:
        from toolkit.keras_source import synchronize

        synchronize(self.device)


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> SavedModelSession:
    from toolkit.keras_source import check_device, set_threads

    set_threads(threads)
    check_device(device)
    import tensorflow as tf

    return SavedModelSession(tf.saved_model.load(str(Path(run_dir) / artifact["main_file"])), threads, device)
