"""What a PyTorch model's forward() takes: its arguments' names and types read from the module, the input specs
checked against them (Python numbers as 0-d inputs), and a module that takes them by position."""
from __future__ import annotations

from deploycmp.core.errors import UsageError


def pt2_inputs(path: str) -> list:
    """A .pt2 file's own inputs: names from its graph signature, dtypes and shapes from the example inputs it was
    exported with (axis 0 as the batch); [] when it does not carry them."""
    import torch

    from deploycmp.core.specs import DTYPES, InputSpec, with_batch

    program = torch.export.load(path)
    args = (getattr(program, "example_inputs", None) or ((),))[0]
    names = list(program.graph_signature.user_inputs)
    dtypes = [str(a.dtype).removeprefix("torch.") for a in args]
    if not args or len(names) != len(args) or any(d not in DTYPES for d in dtypes):
        return []
    return [InputSpec(n, d, with_batch(list(a.shape))) for n, d, a in zip(names, dtypes, args)]


def forward_params(model) -> list[str] | None:
    """The names forward() takes, in order (None when they cannot be read: a .pt2 file's module)."""
    import inspect

    import torch

    if isinstance(model, torch.jit.ScriptModule):
        try:
            return [a.name for a in model.forward.schema.arguments[1:]]
        except Exception:
            return None
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return names or None


# forward() arguments TorchScript types as Python numbers (or an nn.Module annotates so): passed as such, not as tensors
NUMBER_ARGS = {"int": "int64", "float": "float32", "bool": "bool"}
NUMBER_DTYPES = {"int": ("int64", "int32", "uint8"), "float": ("float32", "float16", "bfloat16"), "bool": ("bool",)}


def forward_types(model) -> dict[str, str]:
    """forward()'s argument types by name where they are known: a ScriptModule's schema (Tensor, int, float ...),
    an nn.Module's annotations (int, float, bool; Tensor where annotated so)."""
    import inspect

    import torch

    if isinstance(model, torch.jit.ScriptModule):
        try:
            return {a.name: str(a.type) for a in model.forward.schema.arguments[1:]}
        except Exception:
            return {}
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return {}
    names = {int: "int", float: "float", bool: "bool", torch.Tensor: "Tensor"}
    out = {}
    for p in params:  # an annotation is a type, or its text under `from __future__ import annotations`
        kind = p.annotation.rpartition(".")[2] if isinstance(p.annotation, str) else names.get(p.annotation)
        if kind in names.values():
            out[p.name] = kind
    return out


def _flags(params: list[str], types: dict) -> str:
    """The options that give forward()'s arguments: --const NAME=INT for a Python number, --input for a tensor."""
    return " ".join(f"--const {p}={types[p].upper()}" if types.get(p) in NUMBER_ARGS else f"--input {p}:DTYPE:SHAPE"
                    for p in params)


def _suggestion(params: list[str] | None, types: dict) -> str:
    """What to give for a model without --input, from forward()'s names and types (never a guessed shape)."""
    if not params:
        return "e.g. --input x:DTYPE:SHAPE (or --input-shape N,...)"
    sig = ", ".join(f"{p}: {types[p]}" if p in types else p for p in params)
    return (f"forward({sig}) takes {_flags(params, types)}"
            + (" (the file does not record a tensor's dtype and shape: give its real ones, axis 0 the batch)"
               if any(types.get(p) not in NUMBER_ARGS for p in params) else ""))


def describe_inputs(model, params: list[str] | None, given: list, spec: str, layout: str | None, ranges: dict,
                    warnings: list | None = None, seed: int = 0) -> list[dict]:
    """The input specs, in forward()'s order: given by --input/--const (checked against forward's names and types),
    or one float input from --input-shape named after forward's first argument. An argument TorchScript types int,
    float or bool is passed as a Python number: a 0-d input with one value for every call."""
    from dataclasses import replace

    from deploycmp.core.specs import (apply_ranges, check_ranges, check_value, describe, fix_scalars, settle_constant,
                                      to_dicts)

    types = forward_types(model)
    if not [g for g in given if not g.is_constant()]:
        raise UsageError(f"--model {spec}: give its inputs: {_suggestion(params, types)}")
    tensors = [g for g in given if not g.is_constant() or g.shape]
    given = [replace(g, name=g.name or (params[0] if params and len(tensors) == 1 else "x")) for g in given]
    for g in given:
        if g.layout is None and g.dtype == "float32" and len(g.shape) == 4:
            g.layout = layout or "NCHW"
    if params is not None:
        unknown = [g for g in given if g.name not in params]
        if unknown:
            flag = "--const" if unknown[0].dtype is None else "--input"
            raise UsageError(f"{flag} {unknown[0].name}: {spec} forward() takes {', '.join(params)}")
        given = sorted(given, key=lambda g: params.index(g.name))
    for g in given:
        number = types.get(g.name) if types.get(g.name) in NUMBER_ARGS else None
        if g.dtype is None:
            settle_constant(g, NUMBER_ARGS.get(number), [], number)
        elif number:
            if g.shape:
                raise UsageError(f"input {g.name}: {spec} forward() takes a Python {number}, not a tensor: give its "
                                 f"value with --const {g.name}=VALUE (or declare it 0-d: "
                                 f"--input {g.name}:{g.dtype}:scalar)")
            if g.dtype not in NUMBER_DTYPES[number]:
                raise UsageError(f"input {g.name}: {spec} forward() takes a Python {number}; declare it "
                                 f"{NUMBER_ARGS[number]} (--input {g.name}:{NUMBER_ARGS[number]}:scalar)")
            g.passed_as = number
        check_value(g)
    apply_ranges(given, ranges)
    _default_ranges(model, given)
    check_ranges(given)
    said = fix_scalars(given, seed)
    if warnings is not None:
        warnings.extend(said)
    if params is not None:
        required = [p for p in params if p not in {g.name for g in given} and _required(model, p)]
        if required:
            raise UsageError(f"{spec} forward() also needs {', '.join(required)} ({_flags(required, types)}); give "
                             f"every input: {describe(given)}")
    return to_dicts(given)


def _required(model, param: str) -> bool:
    import inspect

    import torch

    if isinstance(model, torch.jit.ScriptModule):
        try:
            arg = next(a for a in model.forward.schema.arguments if a.name == param)
            return not arg.has_default_value()
        except Exception:
            return True
    try:
        return inspect.signature(model.forward).parameters[param].default is inspect.Parameter.empty
    except (TypeError, ValueError, KeyError):
        return True


def _default_ranges(model, inputs: list) -> None:
    """Token-id inputs without --value-range take the model's vocabulary: config.vocab_size, else the size of
    its first embedding table."""
    import torch

    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is None:
        emb = next((m for m in model.modules() if isinstance(m, torch.nn.Embedding)), None) if hasattr(model, "modules") else None
        vocab = emb.num_embeddings if emb is not None else None
    for s in inputs:
        if s.value_range is None and s.dtype in ("int64", "int32") and not s.is_mask() and vocab:
            s.value_range = [0, int(vocab)]


def positional(record: dict) -> bool:
    """Whether the inputs are forward()'s leading arguments in order, so they can be passed by position."""
    names, params = [i["name"] for i in record["inputs"]], record.get("forward_params")
    return params is None or params[:len(names)] == names


def by_name(model, names: list[str]):
    """The model behind a forward(*args) that passes its arguments by name: every exporter takes positional
    arguments, and a model's inputs need not be its leading ones (input_ids, token_type_ids without a mask)."""
    import torch

    class ByName(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(**dict(zip(names, args)))

    return eval_mode(ByName(model))


def eval_mode(model):
    """Eval mode; a torch.export module has no train mode to leave (and refuses eval())."""
    try:
        model.eval()
    except NotImplementedError:
        pass
    return model
