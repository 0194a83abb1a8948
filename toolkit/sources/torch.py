"""PyTorch source models: resolve --model, load weights, and rebuild the pinned source in any worker process."""
from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
import shutil
import socket
from pathlib import Path

from deploycmp.core.errors import DeployError, UsageError, first_line
from deploycmp.core.specs import DEFAULT_IMAGE_SIZE
from deploycmp.sources.torch_feed import example

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".jit", ".ts", ".torchscript")


def classify_spec(spec: str) -> str:
    """Which kind of source a --model value names, decided without importing any framework."""
    from deploycmp.sources.hf import is_hf

    if is_hf(spec):
        return "hf-hub" if spec.startswith("hf:") else "hf-dir"
    if spec.endswith(".pt2"):
        return "torch-export-file"
    if spec.endswith(TORCHSCRIPT_SUFFIXES) or Path(spec).is_file():
        return "torchscript-file"
    if ":" in spec:
        return "factory"
    return "torchvision"


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _check_torchvision_name(name: str) -> None:
    names = torchvision_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; 'deploycmp list' shows the models"
        raise UsageError(f"unknown model {name!r}{hint}")


def _call_factory(spec: str):
    import torch

    mod_name, _, fn_name = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m` would: the user's own modules
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise UsageError(f"cannot import {mod_name!r} for --model {spec}: {e}") from e
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise UsageError(f"{mod_name} has no callable {fn_name!r} (--model {spec})")
    model = fn()
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"--model {spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_state_dict_file(path: str) -> dict:
    import torch

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"weights file not found: {path}")
    if p.stat().st_size == 0:
        raise UsageError(f"weights file {path} is empty")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a bad file
        if "Weights only load failed" in str(e):  # the unpickler met something that is no tensor, dict or number
            raise UsageError(f"weights file {path} holds Python objects besides tensors, which could run code when "
                             "loaded; deploycmp loads weights with weights_only=True: save a plain state_dict "
                             "(torch.save(model.state_dict(), PATH))") from e
        raise UsageError(f"weights file {path} could not be read as a state_dict: {first_line(e)}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"weights file {path} holds {type(state).__name__}, not a state_dict")
    return state


def _apply_state_dict(model, state: dict, source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise UsageError(f"weights from {source} do not fit the model: {first}") from e


def _pretrained_state_dict(name: str):
    """torchvision's pretrained weights from its cache, or a download; raises DeployError when neither works."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError) as e:
        raise DeployError(f"torchvision has no pretrained weights for {name}") from e
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        return weights, weights.get_state_dict(progress=False, check_hash=False)
    except Exception as e:
        raise DeployError(f"pretrained weights for {name} are not in torch's cache and could not be downloaded ({type(e).__name__}: {str(e)[:120]})") from e
    finally:
        socket.setdefaulttimeout(old)


def default_input_shape(name: str) -> list[int]:
    import torchvision

    size = DEFAULT_IMAGE_SIZE
    try:
        crop = torchvision.models.get_model_weights(name).DEFAULT.transforms().crop_size
        size = int(crop[0])
    except Exception:
        pass
    return [1, 3, size, size]


def build(spec: str, weights: str, given: list, seed: int = 0, num_classes: int | None = None, layout: str | None = None,
          value_ranges: dict | None = None, task: str | None = None):
    """Load the user's model as asked. `given`: the input specs from --input/--input-shape (may be empty).
    Returns (model in eval mode, record for the manifest, warnings)."""
    import torch

    from deploycmp.sources.data import IMAGENET

    given = list(given or [])
    kind = classify_spec(spec)
    warnings: list[str] = []
    record = {"framework": "torch", "kind": kind, "spec": spec, "weights": weights}
    torch.manual_seed(seed)
    if num_classes is not None and kind != "torchvision":
        raise UsageError("--num-classes applies to torchvision models (a file or factory brings its own head)")
    if task is not None and kind not in HF_KINDS:
        raise UsageError("--task applies to Hugging Face models (a save_pretrained directory or hf:ID)")
    if kind in HF_KINDS:
        return _build_hf(spec, weights, given, seed, layout, value_ranges or {}, task, record, warnings)
    if kind in ("torchscript-file", "torch-export-file"):
        if not Path(spec).is_file():
            raise UsageError(f"model file not found: {spec}")
        model = _load_file(spec, kind)
        record["name"] = Path(spec).stem
        if kind == "torch-export-file" and not given:
            given = _pt2_inputs(spec)
        if weights not in ("auto",):
            raise UsageError(f"--weights {weights} does not apply to a model file ({spec} carries its own weights)")
        record["weights"] = "file"
    elif kind == "factory":
        model = _call_factory(spec)
        record["name"] = spec.partition(":")[2]
        if weights in ("auto", "random", "random-raw"):
            record["weights"] = "factory"
        elif weights == "imagenet":
            raise UsageError("--weights imagenet applies to torchvision models; a factory returns its own weights")
        else:
            _apply_state_dict(model, _load_state_dict_file(weights), weights)
            record["weights_file"] = str(weights)
    else:
        _check_torchvision_name(spec)
        import torchvision

        record["name"], record["preprocess"] = spec, IMAGENET  # what torchvision's weights' transforms do
        head = {"num_classes": num_classes} if num_classes else {}
        record.update(head)
        if num_classes and weights in ("imagenet", "auto"):
            raise UsageError(f"--num-classes {num_classes}: ImageNet weights have 1000 classes; pass your "
                             "fine-tuned checkpoint with --weights FILE (or --weights random)")
        if weights in ("random", "random-raw", "auto", "imagenet"):
            model = torchvision.models.get_model(spec, weights=None, **head)
            if weights.startswith("random"):
                warnings.append(f"{spec} has random weights (--weights {weights}): drift and accuracy say little about "
                                "a trained model")
            else:
                try:
                    enum, state = _pretrained_state_dict(spec)
                    _apply_state_dict(model, state, f"torchvision {enum}")
                    record["weights"] = f"imagenet ({enum})"
                except DeployError as e:
                    if weights == "imagenet":
                        raise
                    record["weights"] = "random"
                    warnings.append(f"{spec} has random weights: {e}")
        else:
            model = torchvision.models.get_model(spec, weights=None, **head)
            _apply_state_dict(model, _load_state_dict_file(weights), weights)
            record["weights_file"] = str(weights)
        if not given:
            from deploycmp.core.specs import InputSpec, with_batch

            given = [InputSpec("x", "float32", with_batch(default_input_shape(spec)), layout="NCHW")]
    _eval(model)
    record["forward_params"] = forward_params(model)
    record["inputs"] = describe_inputs(model, record["forward_params"], given, spec, layout, value_ranges or {},
                                       warnings, seed)
    return model, record, warnings


HF_KINDS = ("hf-dir", "hf-hub")


def _build_hf(spec, weights, given, seed, layout, value_ranges, task, record, warnings):
    """A transformers model with the head of its task, wrapped to take its inputs by position and return a dict."""
    from deploycmp.sources import hf as hf_source

    config = hf_source.load_config(spec)
    task = hf_source.task_of(config, task, spec)
    inner, used, more = hf_source.build_model(config, task, spec, weights, seed)
    warnings.extend(more)
    if used not in ("random", "random-raw", "pretrained"):
        _apply_state_dict(inner, _load_state_dict_file(weights), weights)
        record["weights_file"], used = str(weights), "file"
    if used.startswith("random"):
        warnings.append(f"{spec} has random weights (--weights {used}): drift and accuracy say little about a trained model")
    _eval(inner)
    record.update(name=spec[3:] if spec.startswith("hf:") else Path(spec).resolve().name, weights=used, task=task,
                  hf={"architecture": type(inner).__name__, "model_type": getattr(inner.config, "model_type", None),
                      "outputs": list(hf_source.TASKS[task][1])})
    record["forward_params"] = forward_params(inner)
    record["inputs"] = describe_inputs(inner, record["forward_params"], given or hf_source.input_specs(config, inner, task),
                                       spec, layout, value_ranges, warnings, seed)
    record["default_sizes"] = hf_source.default_sizes(config)
    model = hf_source.wrap(inner, [i["name"] for i in record["inputs"]], hf_source.TASKS[task][1])
    return model, record, warnings


def condition(model, record: dict, calibration: dict, inputs: list) -> None:
    """--weights random: a well-conditioned random model. The architecture's own init, then layers it sets to a
    constant (zero heads, zero-init residual branches) re-initialised the way that layer type is by default, then
    BatchNorm statistics recalibrated on the calibration split, so activations keep a realistic scale through the
    network. Each step is recorded in the manifest; --weights random-raw keeps the plain init."""
    import torch
    from torch import nn

    if record.get("weights") != "random":
        return
    reset = []
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or w.numel() == 0:
            continue
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and bool(torch.all(w == w.flatten()[0])):
            m.reset_parameters()
            reset.append(name)
        elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)) and not bool(torch.any(w)):
            with torch.no_grad():
                w.fill_(1.0)  # a zero-init residual branch's norm scale
            reset.append(name)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    samples = len(next(iter(calibration.values())))
    scaled = [] if norms else _unit_variance(model, example({k: a[:8] for k, a in calibration.items()}, inputs))
    if norms and samples > 1:
        momentum = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over what is fed
            m.train()
        with torch.no_grad():
            model(*example(calibration, inputs))
        for m, mo in zip(norms, momentum):
            m.momentum = mo
        model.eval()
        # the classifier after the normalised features still sees their positive (post-ReLU) mean: centre it too
        scaled = _unit_variance(model, example({k: a[:8] for k, a in calibration.items()}, inputs), last_only=True)
    steps = ([f"re-initialised: {', '.join(reset)}"] if reset else []) + (
        [f"BatchNorm recalibrated on {samples} samples"] if norms and samples > 1 else []) + (
        [f"zero mean, unit variance per channel on the calibration inputs: {', '.join(scaled) if len(scaled) < 4 else f'{len(scaled)} layers'}"]
        if scaled else [])
    record["weights"] = f"random ({'; '.join(steps) or 'architecture init'})"
    record["conditioning"] = {"reinitialised": reset, "batchnorm_recalibrated_on": samples if norms else 0,
                              "unit_variance_layers": scaled}


def _unit_variance(model, args, last_only: bool = False) -> list[str]:
    """A network without normalisation layers (AlexNet, VGG): each conv/linear layer, in order, given zero mean and
    unit variance per output channel on the calibration inputs (data-dependent init: Kraehenbuehl et al. 2016,
    Mishkin and Matas 2016), the way BatchNorm would. With PyTorch's default init each such layer shrinks the
    signal and ReLUs shift it positive, so a few layers on the same (input-independent) direction decides the
    class: one class wins every sample. Returns the layers adjusted."""
    import torch
    from torch import nn

    if any(isinstance(m, (nn.LayerNorm, nn.GroupNorm)) for m in model.modules()):
        return []  # normalised already (transformers)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    done = []
    for name, m in layers[-1:] if last_only else layers:
        seen = []
        hook = m.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
        try:
            with torch.no_grad():
                model(*args)
        finally:
            hook.remove()
        if not seen:
            continue
        out = seen[0].transpose(0, 1).reshape(seen[0].shape[1], -1)  # channels first, everything else flattened
        mean, std = out.mean(1), out.std(1).clamp(min=1e-6)
        shape = (-1,) + (1,) * (m.weight.dim() - 1)
        with torch.no_grad():
            m.weight.div_(std.view(shape) if not isinstance(m, nn.modules.conv._ConvTransposeNd) else std.view(1, -1, *shape[2:]))
            if m.bias is not None:
                m.bias.sub_(mean).div_(std)
        done.append(name)
    return done


def _pt2_inputs(path: str) -> list:
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

    return _eval(ByName(model))


def _eval(model):
    """Eval mode; a torch.export module has no train mode to leave (and refuses eval())."""
    try:
        model.eval()
    except NotImplementedError:
        pass
    return model


def _aoti_package(path: str) -> bool:
    """An AOTInductor package (compiled code, as the aoti format writes) rather than a torch.export program."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any("/data/aotinductor/" in n for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _load_file(path: str, kind: str):
    import torch

    if kind == "torch-export-file" and _aoti_package(path):
        raise UsageError(f"{path} is an AOTInductor package (code compiled for one machine, what the aoti format "
                         "writes), not a model deploycmp can export from; give the model it was compiled from")
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.ERROR)  # torch.export.load logs a bad file's traceback as a warning, then raises
    try:
        if kind == "torch-export-file":
            return torch.export.load(path).module()
        return torch.jit.load(path, map_location="cpu")
    except Exception as e:
        what = "a torch.export .pt2 file" if kind == "torch-export-file" else "a TorchScript file (for a state_dict use --weights FILE)"
        raise UsageError(f"{path} could not be loaded as {what}: {first_line(e)}") from e
    finally:
        export_log.setLevel(level)


def save_source(model, record: dict, folder: Path) -> str:
    """Pin the source in the run directory so every worker rebuilds exactly this model; returns the file name."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    if record["kind"] in ("torchscript-file", "torch-export-file"):
        name = "model" + Path(record["spec"]).suffix
        shutil.copyfile(record["spec"], folder / name)
    else:
        if record["kind"] in HF_KINDS:
            from deploycmp.sources import hf as hf_source

            hf_source.save(model, folder)
        name = "weights.pt"
        torch.save(model.state_dict(), folder / name)
    return name


def weights_sha256(model, record: dict) -> str:
    """A digest of the model's weights (every parameter and buffer by name), or of the model file it came from."""
    import hashlib

    import torch

    if record["kind"] in ("torchscript-file", "torch-export-file"):
        from deploycmp.core.rundir import sha256_file

        return sha256_file(record["spec"])
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_source(run_dir: Path, record: dict, source_file: str):
    """Rebuild the pinned source model (eval mode) from the run directory, in any process."""
    import torch

    path = Path(run_dir) / source_file
    kind = record["kind"]
    if kind in ("torchscript-file", "torch-export-file"):
        model = _load_file(str(path), kind)
    elif kind in HF_KINDS:  # the wrapper takes its inputs by position already
        from deploycmp.sources import hf as hf_source

        model = hf_source.rebuild(path.parent, record)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return _eval(model)
    else:
        if kind == "factory":
            from deploycmp.core.seal import check_allowed

            check_allowed(record["spec"])  # code named by the run directory: only what its user allowed
            model = _call_factory(record["spec"])
        else:
            import torchvision

            head = {"num_classes": record["num_classes"]} if record.get("num_classes") else {}
            model = torchvision.models.get_model(record["spec"], weights=None, **head)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model = _eval(model)
    return model if positional(record) else by_name(model, [i["name"] for i in record["inputs"]])


def count_gflops(model, args) -> float | None:
    """Model GFLOPs for one call on `args` (multiply-add = 2 FLOPs), or None if it cannot be counted."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(*args)
        return counter.get_total_flops() / 1e9
    except Exception:
        return None


def batch_works(model, args) -> bool:
    """Whether `model` (the source, or a traced module of it) takes `args` (another batch size, sequence length ...
    than the export's) and returns outputs of their batch size."""
    import torch

    from deploycmp.core.outputs import flatten

    try:
        batch = next(a for a in args if isinstance(a, torch.Tensor) and a.dim()).shape[:1]
        with torch.no_grad():
            out = flatten(model(*args))
        return all(o.shape[:1] == batch for o in out.values())
    except Exception:
        return False


def same_outputs(module, reference, args) -> bool:
    """Whether `module` (a trace) gives what `reference` (the eager model) gives on `args`: a trace can bake a size
    into its graph and still run at another one, with wrong results."""
    import numpy as np
    import torch

    from deploycmp.core.outputs import flatten

    try:
        with torch.no_grad():
            got, want = flatten(module(*args)), flatten(reference(*args))
        return set(got) == set(want) and all(
            got[k].shape == want[k].shape and np.allclose(got[k], want[k], rtol=1e-3, atol=1e-4) for k in want)
    except Exception:
        return False


def reference_outputs(model, feed: dict, inputs: list) -> dict:
    """The golden outputs by name, one sample per call: kernels differ by batch size, and batch 1 is the common case."""
    import numpy as np
    import torch

    from deploycmp.core.outputs import flatten

    n = len(next(iter(feed.values())))
    with torch.inference_mode():
        chunks = [flatten(model(*example({k: a[i:i + 1] for k, a in feed.items()}, inputs))) for i in range(n)]
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def set_threads(threads: int) -> None:
    from deploycmp.sources.torch_feed import set_threads as set_torch_threads

    set_torch_threads(threads)
