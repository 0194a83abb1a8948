"""What a model takes and returns: named, typed inputs and outputs with named dimensions (batch, sequence ...).

Every part of deploycmp speaks in feeds: name -> numpy array, in the order of the model's input specs.
An image classifier is the special case of one float input (`x`, NCHW or NHWC) and one `logits` output.
A constant (--const NAME=VALUE, and every 0-d input) has one value for every call, kept on its spec: feeds and data
files hold it once per sample like any input, and what calls the model passes the spec's value.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

from deploycmp.core.errors import UsageError

DTYPES = ("float32", "float16", "bfloat16", "int64", "int32", "bool", "uint8")
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
# ONNX Runtime's type names (NodeArg.type) as numpy dtype names; deploycmp feeds the DTYPES among them
ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16",
              "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
DEFAULT_IMAGE_SIZE = 224  # the side given to an image input whose size the model leaves free (MobileNetV3 ...)
BATCH = "batch"


def numpy_dtype(dtype: str):
    """The numpy dtype arrays of a spec dtype are kept in (bfloat16, which numpy lacks, as float32)."""
    return np.dtype("float32" if dtype == "bfloat16" else dtype)


@dataclass
class InputSpec:
    name: str
    dtype: str
    shape: list  # ints (fixed) and names (free: "batch", "sequence" ...); axis 0 is the batch
    value_range: list | None = None  # [low, high): integers are drawn from it (token ids in [0, vocab))
    layout: str | None = None  # NCHW | NHWC, images only
    value: int | float | bool | None = None  # a constant: every element, on every call (never drawn, swept, calibrated)
    passed_as: str | None = None  # "int" | "float" | "bool": forward() takes a Python number (TorchScript), no tensor

    def dims(self) -> list[str]:
        return [d for d in self.shape if isinstance(d, str)]

    def resolve(self, values: dict) -> tuple[int, ...]:
        """The concrete shape at named-dimension values {"batch": 8, "sequence": 64}."""
        missing = [d for d in self.dims() if d not in values]
        if missing:
            raise UsageError(f"input {self.name}: dimension {missing[0]!r} has no value; pass --shape {missing[0]}=N")
        return tuple(int(values[d]) if isinstance(d, str) else int(d) for d in self.shape)

    def is_mask(self) -> bool:
        return "mask" in self.name.lower() and self.dtype not in FLOAT_DTYPES

    def is_constant(self) -> bool:
        return self.value is not None


@dataclass
class OutputSpec:
    name: str
    dtype: str = "float32"
    shape: list = field(default_factory=lambda: [BATCH])
    kind: str = "other"  # logits | sequence | other


def inputs_from_dicts(items: list[dict]) -> list[InputSpec]:
    return [InputSpec(**i) for i in items]


# fields written only where they are set, so that the inputs of a model without constants read as before
_OPTIONAL = ("value", "passed_as")


def to_dicts(specs) -> list[dict]:
    return [{k: v for k, v in asdict(s).items() if v is not None or k not in _OPTIONAL} for s in specs]


def split_list(text: str, what: str, cast=str) -> list:
    """A comma-separated option value as a list (repeats dropped): the one parser for every list option."""
    parts = [s.strip() for s in str(text).split(",")]
    if not any(parts):
        raise UsageError(f"{what}: empty list")
    if not all(parts):
        raise UsageError(f"{what} {text!r}: an empty item between commas; expected a comma-separated list, e.g. 1,8,32")
    try:
        items = [cast(s) for s in parts]
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected a comma-separated list") from None
    return list(dict.fromkeys(items))


def parse_dim(text: str, what: str):
    text = text.strip()
    if text.isdigit():
        if int(text) <= 0:
            raise UsageError(f"{what}: dimension {text} must be positive")
        return int(text)
    if text.isidentifier():
        return text
    raise UsageError(f"{what}: dimension {text!r} is neither a positive integer nor a name (batch, sequence ...)")


# an input's name as graphs spell them (input.1, serving/x, pixel-values); ':' and '=' separate the option's parts
INPUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*")


def is_input_name(text: str) -> bool:
    return bool(INPUT_NAME.fullmatch(text))


SCALAR = "scalar"  # --input NAME:DTYPE:scalar (or an empty SHAPE): a 0-d input, one value for every call


def parse_input(text: str) -> InputSpec:
    """--input NAME:DTYPE:SHAPE, e.g. ids:int64:batch,sequence or feats:float32:1,8 (axis 0 is the batch);
    sr:int64:scalar or sr:int64: is a 0-d input."""
    parts = text.split(":")
    # an empty SHAPE is a 0-d input; one of blanks only is more likely a slip, as an empty NAME or DTYPE is
    if len(parts) != 3 or not all(p.strip() for p in parts[:2]) or (parts[2] and not parts[2].strip()):
        raise UsageError(f"--input {text!r}: expected NAME:DTYPE:SHAPE, e.g. ids:int64:1,16 (or sr:int64:scalar)")
    name, dtype, shape = (p.strip() for p in parts)
    if not is_input_name(name):
        raise UsageError(f"--input {text!r}: {name!r} is not a valid input name")
    if dtype not in DTYPES:
        raise UsageError(f"--input {text!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if shape in ("", SCALAR):
        return InputSpec(name, dtype, [])
    dims = [parse_dim(d, f"--input {text!r}") for d in shape.split(",")]
    if BATCH in dims[1:]:
        raise UsageError(f"--input {text!r}: the batch is axis 0; deploycmp does not feed a batch on another axis "
                         "(a recurrent state [layers, batch, hidden] cannot be swept: give its sizes, e.g. 2,1,128)")
    return InputSpec(name, dtype, with_batch(dims))


def parse_value(text: str, what: str):
    """A constant's VALUE: an integer, a number (1e-3, 0.5) or true/false."""
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        v = float(t)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a value; expected an integer, a number or true/false, "
                         "e.g. --const sr=16000") from None
    if not np.isfinite(v):
        raise UsageError(f"{what}: a constant must be finite, not {text}")
    return v


def parse_constants(items: tuple | list) -> dict:
    """--const NAME=VALUE (repeatable) as {name: value}."""
    out = {}
    for text in items or ():
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or not is_input_name(name) or not value.strip():
            raise UsageError(f"--const {text!r}: expected NAME=VALUE, e.g. sr=16000")
        if name in out:
            raise UsageError(f"--const {name} is given twice")
        out[name] = parse_value(value, f"--const {text!r}")
    return out


def per_call(feed: dict, inputs: list[InputSpec]) -> dict:
    """A batch feed as one call takes it: each 0-d input as its one value (a 0-d array; the feed holds it once per
    sample), every other input as it is. For what feeds a model outside a runtime session: calibration, checks."""
    out = dict(feed)
    for s in inputs:
        if not s.shape and s.name in out:
            value = s.value if s.is_constant() else np.asarray(out[s.name]).reshape(-1)[0]
            out[s.name] = np.asarray(value, dtype=numpy_dtype(s.dtype))
    return out


def literal_dtype(value) -> str:
    """The dtype of a constant no --input and no model declares: bool, int64 or float32 as its VALUE is written."""
    return "bool" if isinstance(value, bool) else "int64" if isinstance(value, int) else "float32"


def check_value(spec: InputSpec) -> None:
    """A constant's value fits its dtype: true/false for bool, an integer in range for integer dtypes."""
    v, what = spec.value, f"--const {spec.name}={spec.value}"
    if v is None:
        return
    if spec.dtype == "bool":
        if not isinstance(v, bool):
            raise UsageError(f"{what}: input {spec.name} is bool: give true or false")
    elif spec.dtype in FLOAT_DTYPES:
        if isinstance(v, bool):
            raise UsageError(f"{what}: input {spec.name} is {spec.dtype}: give a number")
        spec.value = float(v)
    else:
        if isinstance(v, bool) or not float(v).is_integer():
            raise UsageError(f"{what}: input {spec.name} is {spec.dtype}: give an integer")
        info = np.iinfo(spec.dtype)
        if not info.min <= int(v) <= info.max:
            raise UsageError(f"{what}: {int(v)} does not fit input {spec.name}'s {spec.dtype} "
                             f"[{info.min}, {info.max}]")
        spec.value = int(v)


def with_constants(given: list[InputSpec], constants: dict) -> list[InputSpec]:
    """--const values onto the --input of their name (copied), else as inputs of their own: 0-d, their dtype from
    the model (dtype None until its source fills it)."""
    from dataclasses import replace

    out = [replace(g) for g in given]
    by_name = {g.name: g for g in out}
    for name, value in constants.items():
        if name in by_name:
            by_name[name].value = value
            check_value(by_name[name])
        else:
            out.append(InputSpec(name, None, [], value=value))
    return out


def settle_constant(spec: InputSpec, dtype: str | None, shape: list | None = None, passed_as: str | None = None):
    """A --const that no --input declared takes the model's own dtype and shape for that input (bool, int64 or
    float32 from how VALUE is written where the model does not say), then is checked against them."""
    if spec.dtype is None:
        spec.dtype = dtype or literal_dtype(spec.value)
        spec.shape = list(shape) if shape is not None and not passed_as else []
    spec.passed_as = spec.passed_as or passed_as
    check_value(spec)


def with_batch(shape: list) -> list:
    """Axis 0 is the batch: a fixed size there becomes the named dimension `batch` (sizes come from --batch)."""
    return [BATCH, *shape[1:]] if shape and not isinstance(shape[0], str) else list(shape)


def parse_sweeps(items: tuple | list, batch: str | None = None) -> dict:
    """--shape NAME=V1,V2 (repeatable) and --batch as {"batch": [...], "sequence": [...]}."""
    sweeps = {}
    for text in items or ():
        name, sep, values = text.partition("=")
        if not sep or not name.strip().isidentifier():
            raise UsageError(f"--shape {text!r}: expected NAME=V1,V2, e.g. sequence=16,64")
        if name.strip() in sweeps:
            raise UsageError(f"--shape {name.strip()} is given twice: give its sizes once, e.g. {name.strip()}=16,64")
        sizes = split_list(values, f"--shape {text!r}", int)
        if any(v <= 0 for v in sizes):
            raise UsageError(f"--shape {text!r}: sizes must be positive integers")
        sweeps[name.strip()] = sizes
    if batch is not None:
        if BATCH in sweeps:
            raise UsageError("give batch sizes once: --batch 1,8 or --shape batch=1,8")
        sizes = split_list(batch, "--batch", int)
        if any(b <= 0 for b in sizes):
            raise UsageError(f"--batch {batch!r}: batch sizes must be positive integers")
        sweeps[BATCH] = sizes
    return sweeps


def parse_value_ranges(items: tuple | list) -> dict:
    """--value-range NAME:LOW,HIGH (repeatable): integers drawn from [LOW, HIGH)."""
    out = {}
    for text in items or ():
        name, sep, bounds = text.partition(":")
        try:
            low, high = (int(v) for v in bounds.split(","))
        except ValueError:
            raise UsageError(f"--value-range {text!r}: expected NAME:LOW,HIGH, e.g. ids:0,1000") from None
        if not sep or not name.strip() or high <= low:
            raise UsageError(f"--value-range {text!r}: expected NAME:LOW,HIGH with LOW < HIGH")
        out[name.strip()] = [low, high]
    return out


def points(sweeps: dict, inputs: list[InputSpec]) -> list[dict]:
    """Every combination of the swept named dimensions the inputs use, the first value of each first."""
    used = [d for d in dict.fromkeys(d for s in inputs for d in s.dims()) if d != BATCH]
    combos = [{}]
    for d in used:
        if d not in sweeps:
            raise UsageError(f"dimension {d!r} of the inputs has no size: pass --shape {d}=N[,M...]")
        combos = [{**c, d: v} for c in combos for v in sweeps[d]]
    return combos


def point_key(dims: dict) -> str:
    """A stable text for a shape point (row and artifact ids, file names): 'sequence64', '' without sweeps."""
    return "-".join(f"{k}{v}" for k, v in dims.items() if k != BATCH)


def export_point(artifact: dict) -> dict:
    """The shape point an artifact was exported at (schema 1 artifacts: their export batch only)."""
    return artifact.get("export_dims") or {BATCH: artifact.get("export_batch")}


def served_by(artifact: dict, dims: dict) -> bool:
    """Whether an artifact exported at its export_dims also takes `dims` (every differing dimension is free)."""
    export = export_point(artifact)
    free = artifact.get("dynamic_dims")
    if free is None:
        free = [BATCH] if artifact.get("dynamic_batch") else []
    return all(export.get(k) == v or k in free for k, v in dims.items())


def point_id(dims: dict) -> str:
    """'b8', 'b1-sequence64': the suffix of ids of artifacts and rows made for one shape point."""
    key = point_key(dims)
    return f"b{dims[BATCH]}" + (f"-{key}" if key else "")


def over_own(own: list[InputSpec], given: list[InputSpec], spec: str) -> list[InputSpec]:
    """A model's own inputs, each replaced by the --input of its name (copied); an --input it lacks is refused.
    A --const alone takes the model's own dtype and shape of that input."""
    from dataclasses import replace

    by_name = {g.name: replace(g) for g in given}
    unknown = [n for n in by_name if n not in {o.name for o in own}]
    if unknown:
        flag = "--const" if by_name[unknown[0]].is_constant() else "--input"
        raise UsageError(f"{flag} {unknown[0]}: {spec} takes {', '.join(o.name for o in own)}")
    out = []
    for o in own:
        g = by_name.get(o.name, o)
        if g.dtype is None:
            settle_constant(g, o.dtype, o.shape)
        out.append(g)
    return out


def apply_ranges(inputs: list[InputSpec], ranges: dict) -> None:
    """--value-range values onto the inputs they name."""
    names = {s.name for s in inputs}
    unknown = [n for n in ranges if n not in names]
    if unknown:
        raise UsageError(f"--value-range {unknown[0]}: the model has no input {unknown[0]!r} ({', '.join(names)})")
    for s in inputs:
        if s.name in ranges:
            if s.is_constant():
                raise UsageError(f"--value-range {s.name}: {s.name} is a constant (--const {s.name}={s.value}): "
                                 "it takes that value on every call, never a range")
            s.value_range = list(ranges[s.name])


def check_ranges(inputs: list[InputSpec]) -> None:
    for s in inputs:
        if s.dtype in ("int64", "int32", "uint8") and s.value_range is None and not s.is_mask() and not s.is_constant():
            if not s.shape:
                raise UsageError(f"input {s.name} is a 0-d {s.dtype} (one value for every call): give it with --const "
                                 f"{s.name}=VALUE (or --value-range {s.name}:LOW,HIGH to draw one)")
            raise UsageError(f"input {s.name} is {s.dtype}: give its values with --value-range {s.name}:LOW,HIGH "
                             f"(e.g. token ids in [0, vocab): --value-range {s.name}:0,30522)")


def fix_scalars(inputs: list[InputSpec], seed: int = 0) -> list[str]:
    """A 0-d input without --const takes one value for every call (a batch has one): drawn once, seeded, as its data
    would be (floats standard normal, integers from the value range), and kept on its spec. Returns warnings."""
    rng = np.random.default_rng(seed)
    said = []
    for s in inputs:
        if s.shape or s.is_constant():
            continue
        if s.dtype in FLOAT_DTYPES:
            s.value = round(float(rng.standard_normal()), 6)
        elif s.dtype == "bool":
            s.value = bool(rng.integers(0, 2))
        else:
            s.value = int(rng.integers(*(s.value_range or (0, 2))))
        said.append(f"input {s.name} is 0-d: one value for every call, drawn once: {s.value} (give it with --const "
                    f"{s.name}=VALUE)")
    return said


def output_kind(shape: tuple, inputs: list[InputSpec], dims: dict) -> str:
    """logits: [batch, classes>1]; sequence: [batch, sequence, ...] when an input has that sequence axis (a named
    axis 1, or axis 1 of token ids / masks)."""
    if len(shape) == 2 and shape[1] > 1:
        return "logits"
    seq = {s.resolve({BATCH: 1, **dims})[1] for s in inputs
           if len(s.shape) >= 2 and (isinstance(s.shape[1], str) or s.dtype not in FLOAT_DTYPES)}
    if len(shape) >= 2 and shape[1] in seq:
        return "sequence"
    return "other"


def describe(inputs: list[InputSpec]) -> str:
    """One line per model for messages: ids:int64[batch,sequence], mask:int64[batch,sequence], sr:int64[]=16000."""
    return ", ".join(f"{s.name}:{s.dtype}[{','.join(map(str, s.shape))}]" + (f"={s.value}" if s.is_constant() else "")
                     for s in inputs)


def to_layout(x, src: str | None, dst: str | None):
    """Transpose a batch between NCHW and NHWC when the artifact's layout differs from the reference's."""
    if not src or not dst or src == dst or x.ndim != 4:
        return x
    if (src, dst) == ("NCHW", "NHWC"):
        return x.transpose(0, 2, 3, 1)
    if (src, dst) == ("NHWC", "NCHW"):
        return x.transpose(0, 3, 1, 2)
    raise ValueError(f"cannot convert layout {src} to {dst}")
