"""The contract of a runtime adapter, and the session every one returns. Timing and metrics live in the harness.

A session's public prepare(feed) checks a name -> array feed against what the artifact itself declares (names,
dtypes, fixed dimensions) and converts only what the artifact requires, recording each conversion; the
adapter implements input_metadata(), prepare_native(), run() and to_numpy() (as Polygraphy's runners do)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass
class TensorMeta:
    """One input as the artifact declares it: its own name, numpy dtype name, shape (None for a free axis), and the
    (scale, zero point) of a quantized integer tensor that takes real values."""

    name: str
    dtype: str
    shape: list
    quantization: tuple | None = None


class Runtime(Protocol):
    """What a runtime module declares (once: the CLI, targets, registry and docs read it from here). OPTIONAL: what
    a module may also declare, with the value its absence means."""

    NAME: str
    FORMATS: tuple[str, ...]  # artifact formats it runs
    REQUIRES: tuple[str, ...]  # import names it needs

    def load(self, artifact: dict, run_dir: Path, threads: int, device: str = "cpu",
             options: dict | None = None) -> "Session":
        """options: bench --tune's settings (TUNE's knob -> value); only a module that declares TUNE or tune_space
        takes it."""


OPTIONAL = {
    "DEVICES": ("cpu",),  # cpu, cuda
    "ON_DEVICE": False,  # a phone-class runtime: the mobile-cpu target runs it
    "OPT_IN": False,  # runs only on targets whose runtimes list names it
    "FRAMEWORK": None,  # the source framework whose eager model it runs (keras-eager: keras)
    "IMPORTS": None,  # what the worker imports before loading (default: REQUIRES), so import time is its own phase
    "PREWARM": True,  # rows may fork from a process that imported IMPORTS (False: the import starts a thread)
    "TUNE": None,  # knob -> values bench --tune may try, the untuned value first
    "tune_space": None,  # (artifact, device) -> TUNE, where the knobs depend on them
}


def feed_names(source: list[str], artifact: list[str]) -> dict[str, str]:
    """Source input name -> the artifact's: the same name where the artifact kept the names, else by position
    (converters rename inputs: args_0, serving_default_x:0 ...)."""
    if set(source) == set(artifact):
        return {n: n for n in source}
    if len(source) != len(artifact):
        raise ValueError(f"the artifact takes {len(artifact)} inputs ({', '.join(artifact)}); the feed has "
                         f"{len(source)} ({', '.join(source)})")
    return dict(zip(source, artifact))


def _kind(dtype: np.dtype) -> str:
    return "int" if dtype.kind in "iub" else "float" if dtype.kind == "f" else dtype.kind


class Session:
    """A loaded artifact. The harness times only run(prepared) on inputs already in the runtime's own format."""

    device = "cpu"

    def input_metadata(self) -> list[TensorMeta]:
        """The artifact's inputs in its own order, as it declares them."""
        raise NotImplementedError

    def prepare(self, feed: dict) -> Any:
        """Check the feed against the artifact's inputs, convert what the artifact requires, then make the runtime's
        native input (not timed). Every conversion is recorded once in self.conversions."""
        meta = {m.name: m for m in self.input_metadata()}
        if not hasattr(self, "conversions"):
            self.conversions = {}
        # a constant (--const) the artifact does not take: the exporter put its value into the graph
        baked = [k for k in feed if k not in meta and _one_value(np.asarray(feed[k]))]
        if baked and len(feed) - len(baked) == len(meta) and set(feed) - set(baked) <= set(meta):
            for k in baked:
                self.conversions.setdefault(k, "left out: the artifact does not take it (its value is in the graph)")
            feed = {k: a for k, a in feed.items() if k not in baked}
        names = feed_names(list(feed), list(meta))
        if any(s != a for s, a in names.items()):
            self.conversions.setdefault("names", ", ".join(f"{s} -> {a}" for s, a in names.items()) + " (by position)")
        return self.prepare_native({names[k]: self._convert(k, np.asarray(a), meta[names[k]]) for k, a in feed.items()})

    def _convert(self, name: str, a: np.ndarray, m: TensorMeta) -> np.ndarray:
        if not m.shape and a.ndim == 1:  # a 0-d input (a constant): the feed holds its one value once per sample
            if not _one_value(a):
                raise ValueError(f"input {name}: the artifact takes one value (shape []), the batch holds several")
            self.conversions.setdefault(name, "one value for the batch (the artifact takes a 0-d input)")
            a = a.reshape(-1)[:1].reshape(())
        if len(a.shape) != len(m.shape) or any(w is not None and w != g for w, g in zip(m.shape, a.shape)):
            raise ValueError(f"input {name}: the artifact takes shape {_shape(m.shape)}, got {list(a.shape)}")
        want = np.dtype(m.dtype)
        if a.dtype == want:
            return a
        if m.quantization and _kind(a.dtype) == "float" and want.kind in "iu":
            scale, zero = m.quantization
            self.conversions.setdefault(name, f"{a.dtype} -> {want} (scale {scale:.4g}, zero point {zero})")
            return a  # prepare_native quantizes with the tensor's own scale
        if _kind(a.dtype) != _kind(want):
            raise TypeError(f"input {name}: the artifact takes {want}, the feed is {a.dtype}; deploycmp does not "
                            "cast between integers and floats")
        if want.kind in "iu" and a.size and (a.min() < np.iinfo(want).min or a.max() > np.iinfo(want).max):
            raise ValueError(f"input {name}: values [{a.min()}, {a.max()}] do not fit the artifact's {want}")
        self.conversions.setdefault(name, f"{a.dtype} -> {want} (the artifact takes {want})")
        return a.astype(want)

    def infer(self, feed: dict) -> dict[str, np.ndarray]:
        """One checked inference outside the timed path: name -> array in, name -> array out."""
        return self.to_numpy(self.run(self.prepare(feed)))

    def prepare_native(self, feed: dict) -> Any:
        """The checked feed (artifact input name -> array) as the runtime's native input."""
        return feed

    def run(self, prepared: Any) -> Any:
        raise NotImplementedError

    def to_numpy(self, raw: Any) -> dict[str, np.ndarray]:
        """The outputs of one run as named numpy arrays, samples first (not timed)."""
        from deploycmp.core.outputs import flatten

        return flatten(raw)

    def info(self) -> dict:
        """What the runtime knows about itself: version, threads, device, providers, the precision it computes in;
        `notes`: things it did on its own that the row must say (a precision it chose), shown as row warnings."""
        return {}

    def synchronize(self) -> None:
        """Wait until work queued on the device is done (GPU sessions whose run() returns early)."""

    def cuda_events(self):
        """A (start, end) pair of CUDA events when the runtime has them (the harness then times on the device)."""
        return None

    def device_memory_mb(self) -> float | None:
        """Peak device memory this session allocated, when the runtime can tell."""
        return None


def _one_value(a: np.ndarray) -> bool:
    return a.size > 0 and bool((a == a.reshape(-1)[0]).all())


def _shape(shape: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def spec_metadata(inputs: list[dict]) -> list[TensorMeta]:
    """Metadata of an artifact that keeps the source's own inputs (the PyTorch modules, an ExecuTorch program's
    positional inputs): named dimensions are free."""
    from deploycmp.core.specs import numpy_dtype

    return [TensorMeta(i["name"], numpy_dtype(i["dtype"]).name, [None if isinstance(d, str) else d for d in i["shape"]])
            for i in inputs]
