"""What deploycmp accepts from files it did not just write: results files and rows (merge, report --baseline, a run
directory given to report, validate, explain or bench) and manifests. Everything from outside is checked here, once,
before anything is written or formatted: one line names the file, the row and the field.

Names that become parts of paths (row and artifact ids, hostnames, reference files) hold no path separator, NUL or
control character and are of bounded length; paths a manifest names stay inside the run directory; numbers that
reports format are numbers, finite where they must be, never negative where they cannot be; strings are bounded.
"""
from __future__ import annotations

import math
import re
from enum import Enum
from pathlib import PurePosixPath

from deploycmp.core.errors import UsageError

# the source frameworks a run can be made from (deploycmp.sources maps each to its module)
FRAMEWORKS = ("torch", "keras", "onnx")


class Status(str, Enum):
    """A row's (or an artifact's) status, as results.json and the manifest spell it."""
    OK = "ok"
    UNAVAILABLE = "unavailable"  # this install or machine cannot make the measurement: the row says why
    FAILED = "failed"
    CRASHED = "crashed"
    TIMEOUT = "timeout"
    EXPORT_FAILED = "export_failed"
    OUT_OF_MEMORY = "out_of_memory"

    def __str__(self) -> str:
        return self.value


STATUSES = tuple(s.value for s in Status)
# the one definition of a failed row: it was tried and did not measure (an unavailable one was not tried)
FAILED = frozenset(s.value for s in Status) - {Status.OK.value, Status.UNAVAILABLE.value}


def failed(row: dict) -> bool:
    return row["status"] in FAILED

MAX_ID = 200            # row and artifact ids (file names under results/, logs/, artifacts/)
MAX_HOSTNAME = 253      # the longest DNS name
MAX_TEXT = 16_384       # any string in a row or manifest (an error, a warning, a path)
MAX_DEPTH = 24          # nesting of dicts and lists
MAX_FILE_BYTES = 512 << 20  # a results file or manifest: bigger is no deploycmp file

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Invalid(ValueError):
    """A field that is not what deploycmp writes: `field` (dotted) and why."""

    def __init__(self, field: str, why: str):
        super().__init__(f"{field}: {why}")
        self.field, self.why = field, why


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def name_problem(value, most: int = MAX_ID) -> str | None:
    """Why `value` cannot be an id or hostname (a part of a file name), or None."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value:
        return "is empty"
    if len(value) > most:
        return f"is {len(value)} characters long (at most {most})"
    if "\x00" in value:
        return "holds a NUL character"
    if _CONTROL.search(value):
        return "holds a control character"
    if "/" in value or "\\" in value:
        return f"{_shown(value)} holds a path separator"
    if value.startswith(".") or value != value.strip():
        return f"{_shown(value)} starts with a dot or space (or ends with a space)"
    return None


def check_name(value, what: str, most: int = MAX_ID) -> str:
    """`value` as a safe name; UsageError naming `what` otherwise."""
    if (why := name_problem(value, most)):
        raise UsageError(f"{what} {why}")
    return value


def relative_path_problem(value) -> str | None:
    """Why `value` is no relative path inside a run directory (absolute, '..', NUL ...), or None."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > 4096 or _CONTROL.search(value):
        return "is too long or holds a control character"
    p = PurePosixPath(value.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or value.startswith("~"):
        return f"{_shown(value)} leads outside the run directory"
    return None


# --- generic bounds ----------------------------------------------------------------------------------------------

def _walk(value, field: str, depth: int = 0) -> None:
    """Every string bounded and free of NUL, every number a number (NaN only where a metric allows it below),
    nesting bounded."""
    if depth > MAX_DEPTH:
        raise Invalid(field, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise Invalid(field, f"is a string of {len(value):,} characters (at most {MAX_TEXT:,})")
        if "\x00" in value:
            raise Invalid(field, "holds a NUL character")
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or len(k) > 200:
                raise Invalid(field, f"has a key {_shown(k)} that is no short string")
            _walk(v, f"{field}.{k}" if field else k, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk(v, f"{field}[{i}]", depth + 1)
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise Invalid(field, f"is a {type(value).__name__}")


def _number(value, field: str, low: float | None = 0.0, finite: bool = True, none: bool = True, integer=False):
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise Invalid(field, f"must be {'an integer' if integer else 'a number'}, not {_shown(value)}")
    if math.isnan(value) or (finite and math.isinf(value)):
        raise Invalid(field, f"must be finite, not {value}")
    if low is not None and value < low:
        raise Invalid(field, f"must be >= {low:g}, not {value}")


def _constant(value, field: str) -> None:
    """A constant input's value: true/false, an integer of int64's range, or a finite number."""
    if value is None or isinstance(value, bool):
        return
    _number(value, field, low=None)
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        raise Invalid(field, f"{value} does not fit an int64")


def _numbers(values: list, field: str) -> None:
    """A long list of finite numbers >= 0, checked at numpy's speed; the first bad one named."""
    import numpy as np

    try:
        a = np.asarray(values, dtype=np.float64)
        ok = a.ndim == 1 and bool(np.all(np.isfinite(a) & (a >= 0)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        for i, x in enumerate(values):
            _number(x, f"{field}[{i}]", none=False)
        raise Invalid(field, "must be a list of numbers")


def _text(value, field: str, none: bool = True, most: int = MAX_TEXT) -> None:
    if value is None and none:
        return
    if not isinstance(value, str):
        raise Invalid(field, f"must be a string, not {_shown(value)}")
    if len(value) > most:
        raise Invalid(field, f"is {len(value):,} characters long (at most {most:,})")


def _dict(value, field: str, none: bool = True) -> dict:
    if value is None and none:
        return {}
    if not isinstance(value, dict):
        raise Invalid(field, f"must be an object, not {type(value).__name__}")
    return value


def _list(value, field: str, none: bool = True) -> list:
    if value is None and none:
        return []
    if not isinstance(value, list):
        raise Invalid(field, f"must be a list, not {type(value).__name__}")
    return value


def _name(value, field: str, most: int = MAX_ID, none: bool = False) -> None:
    if value is None and none:
        return
    if (why := name_problem(value, most)):
        raise Invalid(field, why)


def _path(value, field: str, none: bool = True) -> None:
    if value is None and none:
        return
    if (why := relative_path_problem(value)):
        raise Invalid(field, why)


# --- rows --------------------------------------------------------------------------------------------------------

_LATENCY_STATS = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")
_NON_NEGATIVE = ("size_bytes", "size_gzip_bytes", "latency_per_item_ms", "throughput_per_s", "peak_rss_mb", "gflops",
                 "peak_fraction", "peak_gflops", "device_memory_mb")
_FRACTIONS = ("top1_agreement", "top5_overlap", "accuracy", "reference_accuracy")
_SHORT = ("model", "format", "quantization", "runtime", "target", "device", "artifact")


def _drift(d: dict, field: str) -> None:
    for key, v in d.items():
        where = f"{field}.{key}"
        if key == "outputs":
            for name, per in _dict(v, where).items():
                _drift(_dict(per, f"{where}.{name}", none=False), f"{where}.{name}")
        elif key in ("degenerate", "identical", "kind", "output", "cosine_per", "padding_excluded"):
            continue
        elif key in _FRACTIONS:
            _number(v, where, low=0.0)
            if v is not None and v > 1:
                raise Invalid(where, f"is a fraction, not {v}")
        elif key in ("cosine_min", "cosine_mean"):
            _number(v, where, low=-1.000001)
        elif key in ("max_abs", "mean_abs", "rel_l2"):
            _number(v, where, low=0.0, finite=False)  # rel_l2 is infinite against an all-zero reference
        elif key == "samples":
            _number(v, where, integer=True)
        elif isinstance(v, (int, float)) or key == "sqnr_db" or v is None:
            _number(v, where, low=None)


def check_row(row) -> None:
    """Raises Invalid for a row deploycmp could not have written."""
    if not isinstance(row, dict):
        raise Invalid("row", f"must be an object, not {type(row).__name__}")
    _walk(row, "")
    _name(row.get("id"), "id")
    _name(row.get("source_id"), "source_id", none=True)
    if row.get("status") not in STATUSES:
        raise Invalid("status", f"{_shown(row.get('status'))} is none of {', '.join(STATUSES)}")
    for key in _SHORT:
        _text(row.get(key), key, most=MAX_ID)
    if row.get("batch") is not None:
        _number(row["batch"], "batch", low=1, integer=True)
    _number(row.get("threads"), "threads", low=1, integer=True)
    for k, v in _dict(row.get("shape"), "shape").items():
        _number(v, f"shape.{k}", low=1, integer=True, none=False)
    for key in _NON_NEGATIVE:
        _number(row.get(key), key)
    _number(row.get("model_memory_mb"), "model_memory_mb", low=None)
    latency = _dict(row.get("latency_ms"), "latency_ms")
    for key, v in latency.items():
        where = f"latency_ms.{key}"
        if key.startswith("ci95"):
            pair = _list(v, where)
            if v is not None and len(pair) != 2:
                raise Invalid(where, "must be a [low, high] pair")
            for i, x in enumerate(pair):
                _number(x, f"{where}[{i}]", none=False)
        elif isinstance(v, list):  # per_call (every timed call: up to millions), p50_per_process (--repeat)
            _numbers(v, where)
        elif key == "runs":
            _number(v, where, integer=True)
        elif key in _LATENCY_STATS or isinstance(v, (int, float)):
            _number(v, where, none=key not in ("p50", "p99"))
    for key, v in _dict(row.get("cold_start_ms"), "cold_start_ms").items():
        for i, x in enumerate(v if isinstance(v, list) else [v]):  # total_per_process (--repeat): a list
            _number(x, f"cold_start_ms.{key}" + (f"[{i}]" if isinstance(v, list) else ""))
    _drift(_dict(row.get("drift"), "drift"), "drift")
    host = _dict(row.get("host"), "host")
    _name(host.get("hostname"), "host.hostname", MAX_HOSTNAME, none=True)
    for key in ("cpu_count", "usable_cpus"):
        _number(host.get(key), f"host.{key}", low=1, integer=True)
    _number(host.get("memory_gb"), "host.memory_gb")
    for i, isa in enumerate(_list(host.get("isa"), "host.isa")):
        _text(isa, f"host.isa[{i}]", none=False, most=64)
    for key in ("warnings", "diagnosis"):
        for i, w in enumerate(_list(row.get(key), key)):
            _text(w, f"{key}[{i}]", none=False)
    for key in ("runtime_info", "computes_in", "observed", "timing", "peak", "memory_budget", "tuning", "settings",
                "versions", "node", "conversions"):
        _dict(row.get(key), key)
    for key in ("log", "tuned_file"):
        _path(row.get(key), key)
    _path(_dict(row.get("samples_to_look_at"), "samples_to_look_at").get("file"), "samples_to_look_at.file")


def row_label(row) -> str:
    rid = row.get("id") if isinstance(row, dict) else None
    return f"row {rid}" if isinstance(rid, str) and name_problem(rid) is None else "a row"


def check_rows(rows: list, label: str) -> list:
    """Every row checked; one UsageError line naming the file (`label`), the row and the field."""
    for i, row in enumerate(rows):
        try:
            check_row(row)
        except Invalid as e:
            which = row_label(row) if e.field != "id" else f"row {i + 1}"
            raise UsageError(f"{label}: {which}: {e.field} {e.why}") from None
    return rows


# --- manifests ---------------------------------------------------------------------------------------------------

def check_manifest(manifest: dict, label: str) -> dict:
    """A manifest whose names and paths are safe to use: ids and reference files are plain names, artifact files
    stay inside the run directory, the source model is described by data deploycmp writes."""
    try:
        _check_manifest(manifest)
    except Invalid as e:
        raise UsageError(f"{label}: {e.field} {e.why}") from None
    return manifest


def _check_manifest(m: dict) -> None:
    _walk(m, "")
    model = _dict(m.get("model"), "model", none=False)
    for key in ("framework", "kind", "name"):
        _text(model.get(key), f"model.{key}", none=False, most=MAX_ID)
    if model["framework"] not in FRAMEWORKS:
        raise Invalid("model.framework", f"{_shown(model['framework'])} is none of {', '.join(FRAMEWORKS)}")
    _text(model.get("spec"), "model.spec", none=False, most=4096)
    preprocess = _dict(model.get("preprocess"), "model.preprocess")
    module = preprocess.get("module")
    if module is not None and (not isinstance(module, str) or not _MODULE.match(module)
                               or not module.startswith(("keras.applications.", "keras.src.applications."))):
        raise Invalid("model.preprocess.module", f"{_shown(module)} is no keras.applications module")
    for io in ("inputs", "outputs"):
        for i, spec in enumerate(_list(model.get(io), f"model.{io}")):
            spec = _dict(spec, f"model.{io}[{i}]", none=False)
            _text(spec.get("name"), f"model.{io}[{i}].name", none=False, most=MAX_ID)
            for j, d in enumerate(_list(spec.get("shape"), f"model.{io}[{i}].shape")):
                if isinstance(d, str):
                    _text(d, f"model.{io}[{i}].shape[{j}]", most=MAX_ID)
                else:
                    _number(d, f"model.{io}[{i}].shape[{j}]", low=-1, integer=True, none=False)
            if io == "inputs":  # a constant (--const, a 0-d input): what every runtime is fed on every call
                _constant(spec.get("value"), f"model.inputs[{i}].value")
                if spec.get("passed_as") not in (None, "int", "float", "bool"):
                    raise Invalid(f"model.inputs[{i}].passed_as",
                                  f"{_shown(spec['passed_as'])} is none of int, float, bool")
    for key in ("reference", "calibration"):
        _name(m.get(key), key, none=True)
    for i, ref in enumerate(_list(m.get("references"), "references")):
        ref = _dict(ref, f"references[{i}]", none=False)
        for key in ("file", "calibration"):
            _name(ref.get(key), f"references[{i}].{key}", none=key == "calibration")
        for k, v in _dict(ref.get("dims"), f"references[{i}].dims").items():
            _name(k, f"references[{i}].dims key")
            _number(v, f"references[{i}].dims.{k}", low=1, integer=True, none=False)
    ids = set()
    for i, a in enumerate(_list(m.get("artifacts"), "artifacts", none=False)):
        a = _dict(a, f"artifacts[{i}]", none=False)
        _name(a.get("id"), f"artifacts[{i}].id")
        where = f"artifact {a['id']}"
        if a["id"] in ids:
            raise Invalid(where, "appears twice")
        ids.add(a["id"])
        _name(a.get("path"), f"{where}: path", none=True)
        for key in ("format", "quantization"):
            _name(a.get(key), f"{where}: {key}")
        if a.get("status") not in STATUSES:
            raise Invalid(f"{where}: status", f"{_shown(a.get('status'))} is none of {', '.join(STATUSES)}")
        _path(a.get("main_file"), f"{where}: main_file")
        for j, f in enumerate(_list(a.get("files"), f"{where}: files")):
            f = _dict(f, f"{where}: files[{j}]", none=False)
            _path(f.get("path"), f"{where}: files[{j}].path", none=False)
            _number(f.get("bytes"), f"{where}: files[{j}].bytes", integer=True, none=False)
            if not isinstance(f.get("sha256"), str) or not _HEX64.match(f["sha256"]):
                raise Invalid(f"{where}: files[{j}].sha256", "is no sha256 digest")
        for key in ("size_bytes", "size_gzip_bytes", "export_batch"):
            _number(a.get(key), f"{where}: {key}")
