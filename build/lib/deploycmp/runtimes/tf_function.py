"""The Keras source model wrapped once in tf.function (graph mode, jit_compile=False) with a fixed input
signature, traced at load: what a TensorFlow user does to leave eager mode without exporting anything.
Opt-in: only targets whose `runtimes` list names it run it."""
from __future__ import annotations

from deploycmp.runtimes.keras_eager import DEVICES, FORMATS, FRAMEWORK, REQUIRES, KerasSession, load_model  # noqa: F401

NAME = "tf-function"
# runs the eager artifact of a Keras source, like `keras` (FORMATS, FRAMEWORK ... are its)
OPT_IN = True  # not run by targets without a runtimes list (server-cpu ...): name it in a target's runtimes


class TfFunctionSession(KerasSession):
    name = NAME
    call = ("tf.function(lambda x: model(x, training=False), input_signature=..., jit_compile=False)(x), "
            "traced once at load")

    def __init__(self, model, threads: int, device: str, inputs: list[dict]):
        super().__init__(model, threads, device, inputs)
        tf = self._tf
        # one trace for every shape: named dimensions (batch, sequence) are free (load does not know the row's
        # shape), the rest is the model's; tracing happens here, in the load phase, never in the timed calls
        self.specs = [tf.TensorSpec([None if isinstance(d, str) else d for d in i["shape"]], i["dtype"], name=i["name"])
                      for i in inputs]
        call = (lambda x: model(x, training=False)) if len(inputs) == 1 else (lambda *xs: model(list(xs), training=False))
        self.fn = tf.function(call, input_signature=self.specs, jit_compile=False, reduce_retracing=False)
        self.fn.get_concrete_function()

    def info(self) -> dict:
        return {**super().info(), "input_signature": {s.name: [None if d is None else int(d) for d in s.shape]
                                                      for s in self.specs},
                "traces": self.fn.experimental_get_tracing_count()}

    def run(self, prepared):
        return self.fn(*prepared) if isinstance(prepared, list) else self.fn(prepared)


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> TfFunctionSession:
    model = load_model(artifact, run_dir, threads, device)
    return TfFunctionSession(model, threads, device, artifact["model"]["inputs"])
