"""A PyTorch model's weights: a state_dict file loaded safely (weights_only) and fitted strictly, torchvision's
pretrained weights from torch's cache, and random weights conditioned so that drift on them means something."""
from __future__ import annotations

import socket
from pathlib import Path

from deploycmp.core.errors import DeployError, UsageError, first_line
from deploycmp.sources.torch_feed import example


def load_state_dict_file(path: str) -> dict:
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


def apply_state_dict(model, state: dict, source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise UsageError(f"weights from {source} do not fit the model: {first}") from e


def pretrained_state_dict(name: str):
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
