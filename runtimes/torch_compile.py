"""The PyTorch source model under torch.compile (TorchInductor, default mode; freezing on the CPU): what a PyTorch user
does to speed a model up without exporting it. It compiles in the row's first call, so compile time is part of the
cold start (first_inference); info() counts compiles and recompiles after the timed runs. A server path: the
server-cpu and gpu targets run it on every PyTorch source (not the mobile-cpu target: no phone runs it)."""
from __future__ import annotations

from deploycmp.runtimes.torch_common import TorchSession, check_device, set_threads

NAME = "torch-compile"
FORMATS = ("eager",)
FRAMEWORK = "torch"  # runs the eager artifact of a PyTorch source only
REQUIRES = ("torch",)
DEVICES = ("cpu", "cuda")


# what `bench --tune` may change (first value: what deploycmp runs untuned): the compile mode; and freezing, see
# tune_space
TUNE = {"mode": ("default", "max-autotune-no-cudagraphs")}


def tune_space(artifact: dict, device: str) -> dict:
    """Freezing is on by default on the CPU (PyTorch's recommendation there), off on GPUs: only the other is tried."""
    return {**TUNE, "freezing": ("auto", device != "cpu")}


class CompiledSession(TorchSession):
    def __init__(self, module, inputs: list[dict], device: str, options: dict | None = None):
        super().__init__(module, NAME, inputs, device)
        import torch
        import torch._inductor.config as inductor_config

        options = options or {}
        freezing = options.get("freezing", "auto")
        # freezing constant-folds the weights (and prepacks them for oneDNN): PyTorch recommends it on the CPU
        self.freezing = device == "cpu" if freezing == "auto" else bool(freezing)
        self.mode = options.get("mode", "default")
        inductor_config.freezing = self.freezing
        self.module = torch.compile(self.module, backend="inductor", mode=None if self.mode == "default" else self.mode)

    def info(self) -> dict:
        from torch._dynamo.utils import counters, get_compilation_metrics

        metrics = list(get_compilation_metrics())
        reasons = [m.recompile_reason for m in metrics if m.recompile_reason]
        notes = [f"torch.compile recompiled {len(reasons)} time(s) in this row (first: {reasons[0]})"] if reasons else []
        return {**super().info(), "notes": notes, "compile": {
            "backend": "inductor", "mode": self.mode, "dynamic": "automatic (torch.compile's default)",
            "freezing": self.freezing, "compiles": len(metrics), "compiled_frames": [m.co_name for m in metrics][:10],
            "recompiles": len(reasons),
            "recompile_reasons": reasons[:5], "unique_graphs": counters["stats"]["unique_graphs"],
            "graph_breaks": sum(counters["graph_break"].values()),
            "compile_seconds": round(sum(m.entire_frame_compile_time_s or 0.0 for m in metrics), 3)}}


def load(artifact: dict, run_dir, threads: int, device: str = "cpu", options: dict | None = None) -> CompiledSession:
    set_threads(threads)
    check_device(device)
    from deploycmp.runtimes.aoti import compiler, no_compiler

    if device == "cpu" and compiler() is None:
        from deploycmp.core.errors import Unavailable

        raise Unavailable(no_compiler(NAME))
    import torch

    from deploycmp.sources.torch import load_source

    module = load_source(run_dir, artifact["model"], artifact["main_file"])
    if isinstance(module, torch.jit.ScriptModule):
        from deploycmp.core.errors import Unavailable

        raise Unavailable(f"{NAME}: torch.compile does not compile TorchScript modules (the source is a TorchScript "
                          "file); give the eager model (package.module:factory) to compare it")
    return CompiledSession(module, artifact["model"]["inputs"], device, options)
