"""What the Keras and KerasHub sources share: a Keras model's inputs as deploycmp's input specs, and a model that
does not load said in one line."""
from __future__ import annotations

from pathlib import Path

from deploycmp.core.errors import first_line


def load_error(spec: str, e: Exception) -> str:
    """One line for a Keras model file or SavedModel directory that does not load."""
    text = str(e)
    if "safe_mode" in text or "arbitrary code execution" in text:  # a Lambda layer (or other Python code) in the file
        return (f"{spec} holds Python code (a Lambda layer) that Keras' safe mode refuses to load, and deploycmp does "
                "not run code from model files: rebuild the model without Lambda layers")
    if not spec.endswith(".keras") and not (Path(spec) / "variables").is_dir():
        return f"{spec} is a SavedModel directory without its variables/ folder: copy the whole directory"
    return f"{spec} could not be loaded as a Keras model: {first_line(e, 160)}"


def describe_inputs(model, given: list, spec: str, layout: str | None, ranges: dict) -> list[dict]:
    """The model's own inputs (names, dtypes, shapes; a free axis 1 of an integer input is `sequence`), each
    replaced by the --input of the same name; --input-shape gives a single-input model its shape."""
    from deploycmp.core.specs import FLOAT_DTYPES, InputSpec, apply_ranges, check_ranges, over_own, to_dicts, with_batch

    own = []
    for i, t in enumerate(model.inputs):
        dtype = str(getattr(t.dtype, "name", t.dtype))
        shape = with_batch([1, *t.shape[1:]])
        for axis, d in enumerate(shape[1:], 1):
            if d is None:
                shape[axis] = "sequence" if axis == 1 and dtype not in FLOAT_DTYPES else f"{_name(t, i)}_dim{axis}"
        own.append(InputSpec(_name(t, i), dtype, shape))
    if len(given) == 1 and not given[0].name:
        given = [InputSpec(own[0].name if len(own) == 1 else "x", given[0].dtype, given[0].shape)]
    specs = over_own(own, given, spec)
    for s in specs:
        if s.layout is None and s.dtype in FLOAT_DTYPES and len(s.shape) == 4:
            s.layout = layout or "NHWC"
    apply_ranges(specs, ranges)
    check_ranges(specs)
    return to_dicts(specs)


def _name(tensor, i: int) -> str:
    name = getattr(tensor, "name", None) or f"input_{i}"
    return name.split(":")[0]
