"""AOTInductor packages: the torch.export program (dynamic dimensions as torch-export makes them) compiled ahead of
time by TorchInductor to a shared library in a .pt2 package, for this host's CPU (-march=native, freezing, threads
left to the runtime) and, where a CUDA device is visible at export, for that GPU too. The package is named
model.aoti.pt2, so that the source loader never takes it for a torch.export program. bf16: torch.autocast(bfloat16)
inside the exported program (PyTorch's mixed-precision recipe for CPU inference), float32 inputs and outputs."""
from __future__ import annotations

import subprocess
import time

from deploycmp.core.environment import host, isa_flags
from deploycmp.runtimes.aoti import compiler, no_compiler

FORMAT = "aoti"
SOURCES = ("torch",)
REQUIRES = ("torch",)
MAIN_FILE = "model.aoti.pt2"
CUDA_FILE = "model.cuda.aoti.pt2"
BF16_ISA = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX-512 BF16 or AMX; Arm's BF16 extension
CPU_CONFIGS = {"freezing": True, "cpp.dynamic_threads": True}


def _unsupported() -> dict:
    """Mode -> why it cannot be made on this host: no C++ compiler at all, or bf16 on a CPU without bf16 units."""
    if compiler() is None:
        return {q: no_compiler("aoti") for q in ("none", "bf16")}
    have = isa_flags()
    if not any(f in have for f in BF16_ISA):
        return {"bf16": f"aoti: bf16 needs a CPU with AVX-512 BF16 or AMX (this one has {' '.join(have) or 'none read'})"}
    return {}


UNSUPPORTED = _unsupported()
QUANTIZATIONS = tuple(q for q in ("none", "bf16") if q not in UNSUPPORTED)


class _On:
    """The source with another model (the bf16 wrapper, a copy on the GPU) and its examples on `device`: what
    torch_export.export_program takes."""

    def __init__(self, source, model, device: str):
        self._source, self.model, self._device = source, model, device

    def __getattr__(self, name):
        return getattr(self._source, name)

    @property
    def example(self) -> tuple:
        return tuple(t.to(self._device) for t in self._source.example)

    def dynamic_example(self) -> tuple:
        return tuple(t.to(self._device) for t in self._source.dynamic_example())


def _autocast_bf16(model, device: str, names: list[str]):
    """`model` computing under torch.autocast(device, bfloat16); its bfloat16 outputs returned as float32. forward
    declares the source's input names, so that torch.export matches them with one dynamic_shapes entry each."""
    import inspect

    import torch
    from torch.utils._pytree import tree_map

    class AutocastBF16(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                out = self.inner(*args)
            return tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 else t, out)

    param = inspect.Parameter
    names = [n if n.isidentifier() and n != "self" else f"input_{i}" for i, n in enumerate(names)]
    AutocastBF16.forward.__signature__ = inspect.Signature(
        [param(n, param.POSITIONAL_OR_KEYWORD) for n in ("self", *names)])
    return AutocastBF16(model).eval()


def _program(source, quantization: str, device: str):
    import copy

    from deploycmp.exporters.torch_export import export_program

    model = source.model if device == "cpu" else copy.deepcopy(source.model).to(device)
    if quantization == "bf16":
        model = _autocast_bf16(model, device, source.names)
    return export_program(_On(source, model, device))


def _compile(program, path, device: str) -> dict:
    import torch
    from torch._dynamo.utils import counters
    from torch._inductor import aoti_compile_and_package

    configs = dict(CPU_CONFIGS) if device == "cpu" else {}
    before = dict(counters["inductor"])
    start = time.perf_counter()
    aoti_compile_and_package(program, package_path=str(path),
                             inductor_configs={**configs, "aot_inductor.metadata": {"deploycmp.device": device}})
    seconds = time.perf_counter() - start
    cache = {k.removeprefix("fxgraph_cache_"): counters["inductor"][k] - before.get(k, 0)
             for k in ("fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass") if counters["inductor"][k] - before.get(k, 0)}
    build = {"file": path.name, "device": device, "compile_seconds": round(seconds, 3), "inductor_configs": configs,
             "fx_graph_cache": cache}
    if device == "cpu":
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        build.update(isa=isa_flags(), cpu=host()["cpu"], march="native", vec_isa=str(pick_vec_isa()))
    else:
        major, minor = torch.cuda.get_device_capability()
        build.update(gpu=torch.cuda.get_device_name(), compute_capability=f"{major}.{minor}", cuda=torch.version.cuda)
    return build


def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.splitlines()[0].strip() if out.strip() else cxx
    except (OSError, subprocess.SubprocessError):
        return cxx


def export(source, out_dir, quantization: str) -> dict:
    if quantization in UNSUPPORTED:
        from deploycmp.core.errors import Unavailable

        raise Unavailable(UNSUPPORTED[quantization])
    import torch

    cxx = compiler()
    program, note = _program(source, quantization, "cpu")
    builds = {"cpu": _compile(program, out_dir / MAIN_FILE, "cpu")}
    free = source.free_dims(program.module())
    if torch.cuda.is_available():
        if quantization == "bf16" and not torch.cuda.is_bf16_supported():
            note = (note + "; " if note else "") + "no CUDA package: this GPU has no bf16"
        else:
            cuda_program, _ = _program(source, quantization, "cuda")
            builds["cuda"] = _compile(cuda_program, out_dir / CUDA_FILE, "cuda")
    cpu = builds["cpu"]
    info = {"name": "torch.export.export + torch._inductor.aoti_compile_and_package", "torch": torch.__version__,
            "note": note, "compile_seconds": round(sum(b["compile_seconds"] for b in builds.values()), 3),
            "compiler": _compiler_version(cxx), "compiler_path": cxx, "isa": cpu["isa"], "device": ",".join(builds),
            "builds": builds}
    if len(builds) > 1:
        info["size_note"] = "the artifact's size counts the CPU and the CUDA package"
    if quantization == "bf16":
        info["quantization"] = {"method": "torch.autocast(bfloat16) around the model inside the exported program",
                                "weights": "float32 in the program, cast to bfloat16 where autocast computes in it "
                                           "(folded into constants by freezing on the CPU)",
                                "compute": "bfloat16 for autocast's lower-precision ops (conv, linear, matmul), "
                                           "float32 for the rest", "io": "float32"}
    return {"main_file": MAIN_FILE, "layout": source.layout, "dynamic_dims": free, "exporter": info}
