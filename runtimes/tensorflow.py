"""TensorFlow SavedModels: tf.saved_model.load, then the serving_default signature, as TF Serving calls it."""
from __future__ import annotations

from pathlib import Path

from deploycmp.runtimes.base import Session, TensorMeta

NAME = "tensorflow"
FORMATS = ("savedmodel",)
REQUIRES = ("tensorflow",)
DEVICES = ("cpu", "cuda")


class SavedModelSession(Session):
    def __init__(self, loaded, threads: int, device: str):
        import tensorflow as tf

        self._tf, self._threads, self._loaded, self.device = tf, threads, loaded, device
        self.signature = loaded.signatures["serving_default"]
        self.meta = [TensorMeta(name, spec.dtype.name, [None if d is None else int(d) for d in spec.shape.as_list()])
                     for name, spec in self.signature.structured_input_signature[1].items()]

    def info(self) -> dict:
        return {"runtime": NAME, "version": self._tf.__version__, "threads": self._threads, "device": self.device,
                "signature": "serving_default"}

    def input_metadata(self):
        return self.meta

    def prepare_native(self, feed: dict):
        return {k: self._tf.constant(a) for k, a in feed.items()}

    def run(self, prepared):
        return self.signature(**prepared)

    def synchronize(self) -> None:
        from deploycmp.sources.keras import synchronize

        synchronize(self.device)


# what `bench --tune` may change besides the intra-op threads (first value: what deploycmp runs untuned): threads
# running independent ops side by side (never more than the row's threads)
TUNE = {"inter_op_threads": (1, 2, 4)}


def load(artifact: dict, run_dir, threads: int, device: str = "cpu", options: dict | None = None) -> SavedModelSession:
    from deploycmp.sources.keras import check_device, set_threads

    set_threads(threads, (options or {}).get("inter_op_threads", 1))
    check_device(device)
    import tensorflow as tf

    return SavedModelSession(tf.saved_model.load(str(Path(run_dir) / artifact["main_file"])), threads, device)
