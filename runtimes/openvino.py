"""OpenVINO IR on OpenVINO's CPU plugin: the target's threads (INFERENCE_NUM_THREADS) and the LATENCY hint (one
stream, as benchmark_app sets for synchronous inference); the precision left at OpenVINO's default (what users get:
bf16 on CPUs with AVX-512 BF16 or AMX) unless the artifact asks for one (the bf16 export). The precision it really
computes in is read back from the compiled model and, where it is not the artifact's, said in the row.

Fed the way OpenVINO documents for the lowest latency and as benchmark_app times it: an IR with free dimensions is
reshaped to the row's shape and compiled static (at the first feed), the input tensors share the feed's memory and
are set on the one infer request once per feed, and the timed call is start_async() + wait() with nothing else."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from deploycmp.core.errors import Unavailable
from deploycmp.runtimes.base import Session, TensorMeta

NAME = "openvino"
FORMATS = ("openvino",)
REQUIRES = ("openvino",)
PREWARM = False  # importing it starts a thread: its rows start fresh (core.prewarm)
# deploycmp's gpu target is a CUDA GPU; OpenVINO's GPU plugin runs Intel GPUs only, so it runs on the CPU here
DEVICES = ("cpu",)
READ_BACK = ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT",
             "EXECUTION_MODE_HINT", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING", "SCHEDULING_CORE_TYPE")
# layers of the executed graph that compute (not data movement), for the per-precision count
MOVES = {"Input", "Parameter", "Output", "Result", "Const", "Constant", "Reorder", "Reshape", "Convert"}
TIMED_CALL = ("start_async() + wait() on one infer request whose input tensors (sharing the feed's memory) were set "
              "once per feed; outputs read after the call")


def bf16_support(core) -> str | None:
    """Why OpenVINO cannot compute in bf16 on this CPU, or None when it can (its own OPTIMIZATION_CAPABILITIES)."""
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" in caps:
        return None
    return f"openvino: this CPU has no bf16 support (OpenVINO's CPU capabilities: {', '.join(caps)})"


def _text(value) -> str:
    """A property value as OpenVINO spells it in its configuration (f32, bf16, LATENCY ...)."""
    if hasattr(value, "get_type_name"):  # ov.Type
        return value.get_type_name()
    return value.name if hasattr(value, "name") and not isinstance(value, (str, int)) else value


def _label(value: str) -> str:
    return {"f32": "fp32", "f16": "fp16"}.get(value, value)


class Feed:
    """A prepared feed: the infer request compiled for its shapes and its input tensors, which share the arrays'
    memory (the arrays are kept alive here)."""

    __slots__ = ("key", "request", "tensors", "arrays")

    def __init__(self, key, request, tensors: dict, arrays: dict):
        self.key, self.request, self.tensors, self.arrays = key, request, tensors, arrays


class OvSession(Session):
    def __init__(self, core, model, threads: int, device: str, requested: dict, wanted: str, quantization: str | None):
        import openvino as ov

        self.core, self.model, self.device, self._tensor = core, model, device, ov.Tensor
        self._version = ov.get_version()
        self._threads, self._requested, self._wanted, self._quantization = threads, requested, wanted, quantization
        self.inputs = [TensorMeta(p.get_any_name(), p.get_element_type().to_dtype().name,
                                  [d.get_length() if d.is_static else None for d in p.get_partial_shape()])
                       for p in model.inputs]
        self.output_names = [p.get_any_name() if p.get_names() else f"output_{i}" for i, p in enumerate(model.outputs)]
        if len(self.output_names) == 1 and not model.outputs[0].get_names():
            self.output_names = ["output"]
        self.free = any(None in m.shape for m in self.inputs)
        self._requests = {}  # input shapes -> (compiled model, its infer request)
        self._holding = {}  # input shapes -> the prepared feed whose tensors that request holds
        self.compiled, self.compiled_for, self.reshape_error = None, None, None
        if not self.free:  # nothing to specialise: compiled at load, as users do
            self._request(tuple((m.name, tuple(m.shape)) for m in self.inputs))

    def _request(self, key: tuple):
        """The infer request of the model compiled for these input shapes: an IR with free dimensions is reshaped to
        them first (OpenVINO's CPU plugin runs static shapes faster, and a row is one shape); compiled once each."""
        if key not in self._requests:
            model = self.model
            if self.free and self.reshape_error is None:
                try:
                    model.reshape({name: list(shape) for name, shape in key})
                except Exception as e:  # a graph that cannot take static shapes runs with its free dimensions
                    self.reshape_error = str(e).strip().splitlines()[0][:300]
            compiled = self.core.compile_model(model, "CPU", self._requested)
            self._requests[key] = (compiled, compiled.create_infer_request())
            self.compiled_for = dict(key) if self.free and self.reshape_error is None else None
        compiled, request = self._requests[key]
        self.compiled = compiled
        return request

    def input_metadata(self):
        return self.inputs

    def prepare_native(self, feed: dict) -> Feed:
        # contiguous, aligned and writable: what ov.Tensor shares without a copy (a 0-d array too)
        arrays = {k: np.require(a, requirements=("C", "A", "W")) for k, a in feed.items()}
        key = tuple((k, tuple(a.shape)) for k, a in arrays.items())
        request = self._request(key)
        return Feed(key, request, {k: self._tensor(a, shared_memory=True) for k, a in arrays.items()}, arrays)

    def run(self, prepared: Feed):
        request = prepared.request
        if self._holding.get(prepared.key) is not prepared:  # a feed's tensors are set once, not in every timed call
            for name, tensor in prepared.tensors.items():
                request.set_tensor(name, tensor)
            self._holding[prepared.key] = prepared
        request.start_async()
        request.wait()
        return request

    def to_numpy(self, raw) -> dict:
        """The request's output tensors, copied (the next run overwrites them)."""
        return {name: np.array(raw.get_output_tensor(i).data, copy=True) for i, name in enumerate(self.output_names)}

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
        if self.compiled is None:  # asked before any feed: the IR as it is
            self.compiled = self.core.compile_model(self.model, "CPU", self._requested)
        in_force = {}
        for key in READ_BACK:
            try:
                in_force[key] = _text(self.compiled.get_property(key))
            except Exception:  # a property this version or device does not have
                pass
        computes = in_force.get("INFERENCE_PRECISION_HINT")
        out = {"runtime": NAME, "version": self._version, "threads": self._threads, "device": self.device,
               "openvino_device": "CPU", "requested": self._requested, "properties": in_force,
               "computes_in": computes, "timed_call": TIMED_CALL,
               "compiled_for": ({k: list(v) for k, v in self.compiled_for.items()} if self.compiled_for
                                else "the IR's own shapes"),
               # a reshaped IR compiles at its first feed: that time is in the cold start's first inference
               "compiled_at": "the first feed (reshaped to its shapes)" if self.free else "load"}
        if self.reshape_error:
            out["reshape_error"] = self.reshape_error
        try:
            layers = out["layer_precisions"] = self.layer_precisions()
        except Exception:
            layers = None
        notes = []
        if self.reshape_error:
            notes.append("OpenVINO could not reshape this IR to the row's shape, so it ran with its free dimensions "
                         f"(slower on the CPU plugin than static shapes): {self.reshape_error}")
        # said where some layer really computes in it (an int8 model whose every layer runs in u8 changes nothing)
        if computes and computes != self._wanted and (layers is None or computes in layers):
            notes.append(precision_note(computes, self._wanted, self._quantization,
                                        bool(self._requested.get("INFERENCE_PRECISION_HINT"))))
        out["notes"] = notes
        return out


def precision_note(computes: str, wanted: str, quantization: str | None, asked: bool) -> str:
    """The row's words where OpenVINO computes in another precision than the artifact's (bf16 by default on CPUs
    with AVX-512 BF16 or AMX): what it chose, and which measurement is the one in the wanted precision."""
    what = {None: "this fp32 model", "none": "this fp32 model",
            "int8": "the float layers of this int8 model (those NNCF left)"}.get(quantization, f"this {quantization} model")
    if asked:
        return f"OpenVINO computes {what} in {computes} on this CPU, although {wanted} was asked for"
    why = " (its default where the CPU has AVX-512 BF16 or AMX)" if computes == "bf16" else " (its default)"
    if quantization in (None, "none"):
        return (f"OpenVINO chose {computes}, not {_label(wanted)}: it computes this fp32 model in {computes} on this "
                f"CPU{why}, so this row's latency and drift are {computes}'s. The {_label(wanted)} measurement is "
                f"--quantize none compiled with INFERENCE_PRECISION_HINT={wanted}, which `bench --tune` measures (its "
                f"precision={wanted} trial)")
    return (f"OpenVINO chose {computes}: it computes {what} in {computes} on this CPU{why}; "
            f"INFERENCE_PRECISION_HINT={wanted} (`bench --tune`, precision={wanted}) keeps them in {_label(wanted)}")


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
    wanted = requested.get("INFERENCE_PRECISION_HINT", "f32")
    return OvSession(core, model, threads, device, requested, wanted, artifact.get("quantization"))
