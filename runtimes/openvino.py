"""OpenVINO IR on OpenVINO's CPU plugin: the target's threads (INFERENCE_NUM_THREADS) and the LATENCY hint (one
stream, as benchmark_app sets for synchronous inference); the precision left at OpenVINO's default (what users get:
bf16 on CPUs with AVX-512 BF16 or AMX) unless the artifact asks for one (the bf16 export). The precision it really
computes in is read back from the compiled model and, where it is not the artifact's, said in the row."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from deploycmp.errors import Unavailable
from deploycmp.runtimes.base import Session, TensorMeta

NAME = "openvino"
FORMATS = ("openvino",)
REQUIRES = ("openvino",)
# deploycmp's gpu target is a CUDA GPU; OpenVINO's GPU plugin runs Intel GPUs only, so it runs on the CPU here
DEVICES = ("cpu",)
READ_BACK = ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT",
             "EXECUTION_MODE_HINT", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING", "SCHEDULING_CORE_TYPE")
# layers of the executed graph that compute (not data movement), for the per-precision count
MOVES = {"Input", "Parameter", "Output", "Result", "Const", "Constant", "Reorder", "Reshape", "Convert"}


def _text(value) -> str:
    """A property value as OpenVINO spells it in its configuration (f32, bf16, LATENCY ...)."""
    if hasattr(value, "get_type_name"):  # ov.Type
        return value.get_type_name()
    return value.name if hasattr(value, "name") and not isinstance(value, (str, int)) else value


def _label(value: str) -> str:
    return {"f32": "fp32", "f16": "fp16"}.get(value, value)


class OvSession(Session):
    def __init__(self, compiled, threads: int, device: str, requested: dict, wanted: str, quantization: str | None):
        import openvino as ov

        self.compiled, self.device = compiled, device
        self.request = compiled.create_infer_request()
        self._version = ov.get_version()
        self._threads, self._requested, self._wanted, self._quantization = threads, requested, wanted, quantization
        self.inputs = [TensorMeta(p.get_any_name(), p.get_element_type().to_dtype().name,
                                  [d.get_length() if d.is_static else None for d in p.get_partial_shape()])
                       for p in compiled.inputs]
        self.output_names = [p.get_any_name() if p.get_names() else f"output_{i}" for i, p in enumerate(compiled.outputs)]
        if len(self.output_names) == 1 and not compiled.outputs[0].get_names():
            self.output_names = ["output"]

    def input_metadata(self):
        return self.inputs

    def prepare_native(self, feed: dict):
        return {k: np.ascontiguousarray(a) for k, a in feed.items()}

    def run(self, prepared):
        # zero-copy in and out: the outputs are views of the request's tensors, copied (untimed) in to_numpy
        return self.request.infer(prepared, share_inputs=True, share_outputs=True)

    def to_numpy(self, raw) -> dict:
        return {name: np.array(raw[i], copy=True) for i, name in enumerate(self.output_names)}

    def layer_precisions(self) -> dict:
        """How many computing layers of the executed graph run in each precision (OpenVINO's runtime model)."""
        counts = Counter()
        for op in self.compiled.get_runtime_model().get_ops():
            rt = op.get_rt_info()
            kind = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
            if kind not in MOVES and "runtimePrecision" in rt:
                counts[rt["runtimePrecision"].astype(str)] += 1
        return dict(counts.most_common())

    def info(self) -> dict:
        in_force = {}
        for key in READ_BACK:
            try:
                in_force[key] = _text(self.compiled.get_property(key))
            except Exception:  # a property this version or device does not have
                pass
        computes = in_force.get("INFERENCE_PRECISION_HINT")
        out = {"runtime": NAME, "version": self._version, "threads": self._threads, "device": self.device,
               "openvino_device": "CPU", "requested": self._requested, "properties": in_force,
               "computes_in": computes}
        try:
            layers = out["layer_precisions"] = self.layer_precisions()
        except Exception:
            layers = None
        notes = []
        # said where some layer really computes in it (an int8 model whose every layer runs in u8 changes nothing)
        if computes and computes != self._wanted and (layers is None or computes in layers):
            what = {"none": "this fp32 model", "int8": "the float layers of this int8 model (those NNCF left)"}.get(
                self._quantization, f"this {self._quantization} model")
            if self._requested.get("INFERENCE_PRECISION_HINT"):
                notes.append(f"OpenVINO computes {what} in {computes} on this CPU, although {self._wanted} was asked for")
            else:
                why = " (its default where the CPU has AVX-512 BF16 or AMX)" if computes == "bf16" else " (its default)"
                notes.append(f"OpenVINO computes {what} in {computes} on this CPU{why}; set INFERENCE_PRECISION_HINT="
                             f"{self._wanted} for {_label(self._wanted)}")
        out["notes"] = notes
        return out


# what `bench --tune` may change (first value: what deploycmp runs untuned): the performance hint, streams, and the
# precision the CPU plugin computes in ("default": as OpenVINO comes, bf16 on CPUs that have it)
TUNE = {"performance_hint": ("LATENCY", "THROUGHPUT"), "num_streams": ("default", 1),
        "precision": ("default", "f32", "bf16")}


def tune_space(artifact: dict, device: str) -> dict:
    """A bf16 artifact is defined by its precision hint: only the hint and streams are tried on it."""
    asks_bf16 = ((artifact.get("exporter") or {}).get("compile_properties") or {}).get("INFERENCE_PRECISION_HINT")
    return {k: v for k, v in TUNE.items() if not (k == "precision" and asks_bf16)}


def load(artifact: dict, run_dir, threads: int, device: str = "cpu", options: dict | None = None) -> OvSession:
    import openvino as ov

    if device != "cpu":
        raise Unavailable(f"openvino runs on the CPU here: its GPU plugin runs Intel GPUs, not {device}")
    core = ov.Core()
    # what the exporter asked for (the bf16 artifact: INFERENCE_PRECISION_HINT=bf16); nothing else is changed
    asked = dict((artifact.get("exporter") or {}).get("compile_properties") or {})
    if asked.get("INFERENCE_PRECISION_HINT") == "bf16":
        from deploycmp.exporters.openvino import bf16_support

        if (reason := bf16_support(core)):
            raise Unavailable(reason)
    options = options or {}
    requested = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": options.get("performance_hint", "LATENCY"),
                 **asked}
    if options.get("num_streams", "default") != "default":
        requested["NUM_STREAMS"] = int(options["num_streams"])
    if options.get("precision", "default") != "default":
        requested["INFERENCE_PRECISION_HINT"] = options["precision"]
    model = core.read_model(str(Path(run_dir) / artifact["main_file"]))
    compiled = core.compile_model(model, "CPU", requested)
    wanted = requested.get("INFERENCE_PRECISION_HINT", "f32")
    return OvSession(compiled, threads, device, requested, wanted, artifact.get("quantization"))
