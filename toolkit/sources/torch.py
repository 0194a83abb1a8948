"""PyTorch source models: resolve --model, load weights, and rebuild the pinned source in any worker process."""
from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
import shutil
from pathlib import Path

from deploycmp.core.errors import DeployError, UsageError, first_line
from deploycmp.core.specs import DEFAULT_IMAGE_SIZE
from deploycmp.sources.torch_feed import example
from deploycmp.sources.torch_inputs import by_name, describe_inputs, eval_mode, forward_params, positional, pt2_inputs
from deploycmp.sources.torch_weights import condition  # noqa: F401 (the source contract: sources.base.Framework)
from deploycmp.sources.torch_weights import apply_state_dict, load_state_dict_file, pretrained_state_dict



def imports(record: dict) -> tuple[str, ...]:
    """What an export worker imports to rebuild this source (sources.base.OPTIONAL)."""
    kind = record.get("kind")
    return ("torch", *(("torchvision",) if kind == "torchvision" else ("transformers",) if kind in HF_KINDS else ()))

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
            given = pt2_inputs(spec)
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
            apply_state_dict(model, load_state_dict_file(weights), weights)
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
                    enum, state = pretrained_state_dict(spec)
                    apply_state_dict(model, state, f"torchvision {enum}")
                    record["weights"] = f"imagenet ({enum})"
                except DeployError as e:
                    if weights == "imagenet":
                        raise
                    record["weights"] = "random"
                    warnings.append(f"{spec} has random weights: {e}")
        else:
            model = torchvision.models.get_model(spec, weights=None, **head)
            apply_state_dict(model, load_state_dict_file(weights), weights)
            record["weights_file"] = str(weights)
        if not given:
            from deploycmp.core.specs import InputSpec, with_batch

            given = [InputSpec("x", "float32", with_batch(default_input_shape(spec)), layout="NCHW")]
    eval_mode(model)
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
        apply_state_dict(inner, load_state_dict_file(weights), weights)
        record["weights_file"], used = str(weights), "file"
    if used.startswith("random"):
        warnings.append(f"{spec} has random weights (--weights {used}): drift and accuracy say little about a trained model")
    eval_mode(inner)
    record.update(name=spec[3:] if spec.startswith("hf:") else Path(spec).resolve().name, weights=used, task=task,
                  hf={"architecture": type(inner).__name__, "model_type": getattr(inner.config, "model_type", None),
                      "outputs": list(hf_source.TASKS[task][1])})
    record["forward_params"] = forward_params(inner)
    record["inputs"] = describe_inputs(inner, record["forward_params"], given or hf_source.input_specs(config, inner, task),
                                       spec, layout, value_ranges, warnings, seed)
    record["default_sizes"] = hf_source.default_sizes(config)
    model = hf_source.wrap(inner, [i["name"] for i in record["inputs"]], hf_source.TASKS[task][1])
    return model, record, warnings


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
        return eval_mode(model)
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
    model = eval_mode(model)
    return model if positional(record) else by_name(model, [i["name"] for i in record["inputs"]])


def count_gflops(model, args) -> float | None:
    """Model GFLOPs for one call on `args` (multiply-add = 2 FLOPs), or None if it cannot be counted: PyTorch's
    FLOP formulas (torch.utils.flop_counter, the ones FlopCounterMode counts with, decomposing an op it has none
    for the same way) under a dispatch mode that does not import torch._dynamo (FlopCounterMode's does: 1 s in every
    export of a model that is never compiled)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counting(TorchDispatchMode):
        total = 0

        @classmethod
        def _should_skip_dynamo(cls) -> bool:  # the documented opt-out: nothing here is compiled
            return False

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            packet = func._overloadpacket
            if packet not in flop_registry and func is not torch.ops.prim.device.default:
                with self:
                    decomposed = func.decompose(*args, **kwargs)
                if decomposed is not NotImplemented:
                    return decomposed
            out = func(*args, **kwargs)
            if packet in flop_registry:
                self.total += flop_registry[packet](*args, **kwargs, out_val=out)
            return out

    try:
        counter = Counting()
        with counter, torch.no_grad():
            model(*args)
        return counter.total / 1e9
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
