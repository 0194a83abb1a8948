"""The PyTorch source model under torch.compile (TorchInductor, default mode; freezing on the CPU): what a PyTorch user
does to speed a model up without exporting it. It compiles in the row's first call, so compile time is part of the
cold start (first_inference); info() counts compiles and recompiles after the timed runs. Opt-in (as keras-predict
and tf-function): only targets whose `runtimes` list names it run it."""
from __future__ import annotations

from deploycmp.runtimes.torch_common import TorchSession, check_device, set_threads

NAME = "torch-compile"
FORMATS = ("eager",)
FRAMEWORK = "torch"  # runs the eager artifact of a PyTorch source only
REQUIRES = ("torch",)
DEVICES = ("cpu", "cuda")
OPT_IN = True  # every compile costs seconds to minutes per row: not run by targets without a runtimes list


class CompiledSession(TorchSession):
    def __init__(self, module, inputs: list[dict], device: str):
        super().__init__(module, NAME, inputs, device)
        import torch
        import torch._inductor.config as inductor_config

        self.freezing = device == "cpu"  # constant-folds the weights (and prepacks them for oneDNN) on the CPU
        inductor_config.freezing = self.freezing
        self.module = torch.compile(self.module, backend="inductor")

    def info(self) -> dict:
        from torch._dynamo.utils import counters, get_compilation_metrics

        metrics = list(get_compilation_metrics())
        reasons = [m.recompile_reason for m in metrics if m.recompile_reason]
        notes = [f"torch.compile recompiled {len(reasons)} time(s) in this row (first: {reasons[0]})"] if reasons else []
        return {**super().info(), "notes": notes, "compile": {
            "backend": "inductor", "mode": "default", "dynamic": "automatic (torch.compile's default)",
            "freezing": self.freezing, "compiles": len(metrics), "compiled_frames": [m.co_name for m in metrics][:10],
            "recompiles": len(reasons),
            "recompile_reasons": reasons[:5], "unique_graphs": counters["stats"]["unique_graphs"],
            "graph_breaks": sum(counters["graph_break"].values()),
            "compile_seconds": round(sum(m.entire_frame_compile_time_s or 0.0 for m in metrics), 3)}}


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> CompiledSession:
    set_threads(threads)
    check_device(device)
    from deploycmp.runtimes.aoti import compiler, no_compiler

    if device == "cpu" and compiler() is None:
        from deploycmp.errors import Unavailable

        raise Unavailable(no_compiler(NAME))
    from deploycmp.torch_source import load_source

    return CompiledSession(load_source(run_dir, artifact["model"], artifact["main_file"]), artifact["model"]["inputs"], device)
