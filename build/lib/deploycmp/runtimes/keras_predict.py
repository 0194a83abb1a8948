"""Keras' own batch inference loop, model.predict(x, batch_size=len(x), verbose=0), on the eager artifact of a
Keras source: what many Keras users call. Opt-in: only targets whose `runtimes` list names it run it."""
from __future__ import annotations

import numpy as np

from deploycmp.runtimes.keras_eager import DEVICES, FORMATS, FRAMEWORK, REQUIRES, KerasSession, load_model  # noqa: F401

NAME = "keras-predict"
# runs the eager artifact of a Keras source, like `keras` (FORMATS, FRAMEWORK ... are its)
OPT_IN = True  # not run by targets without a runtimes list (server-cpu ...): name it in a target's runtimes


class KerasPredictSession(KerasSession):
    name, call = NAME, "model.predict(x, batch_size=len(x), verbose=0) on a numpy batch; returns numpy"

    def prepare_native(self, feed: dict):
        arrays = [np.ascontiguousarray(feed[i["name"]]) for i in self.inputs]  # what predict is given in practice
        return arrays[0] if len(arrays) == 1 else arrays

    def run(self, prepared):
        first = prepared[0] if isinstance(prepared, list) else prepared
        return self.model.predict(prepared, batch_size=len(first), verbose=0)


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> KerasPredictSession:
    return KerasPredictSession(load_model(artifact, run_dir, threads, device), threads, device, artifact["model"]["inputs"])
