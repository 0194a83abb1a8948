"""AOTInductor packages (.aoti.pt2) loaded with torch._inductor.aoti_load_package. A package is compiled code for
the machine that exported it (-march=native), so one built for ISA extensions this CPU lacks is refused before it
is loaded: it would die of an illegal instruction (pytorch/pytorch#121516)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from deploycmp.runtimes.torch_common import TorchSession, check_device, set_threads

NAME = "aoti"
FORMATS = ("aoti",)
REQUIRES = ("torch",)
IMPORTS = ("torch", "torch._inductor")  # imported before the load clock starts
DEVICES = ("cpu", "cuda")


def compiler() -> str | None:
    """The C++ compiler TorchInductor runs (its config.cpp.cxx: $CXX, else g++), where it is on PATH."""
    return shutil.which(os.environ.get("CXX", "g++"))


def no_compiler(what: str) -> str:
    return (f"{what}: no C++ compiler ({os.environ.get('CXX', 'g++')} is not on PATH); TorchInductor compiles the "
            "model's code with one on the CPU (install g++, or set CXX)")


def missing_isa(built_for: list[str]) -> list[str]:
    """The ISA extensions a package was built for that this CPU lacks (of those deploycmp reads: environment.ISA)."""
    from deploycmp.core.environment import ISA, isa_flags

    have = set(isa_flags())
    return [f for f in built_for if f in ISA and f not in have]


def build_for(artifact: dict, device: str) -> dict:
    """The exporter's record of the package built for `device`; Unavailable when there is none or this host
    cannot run it."""
    from deploycmp.core.errors import Unavailable

    builds = (artifact.get("exporter") or {}).get("builds") or {}
    build = builds.get(device)
    if build is None:
        raise Unavailable(f"aoti: the package was compiled for {', '.join(builds) or 'another device'}, not {device} "
                          "(export on a host with a visible CUDA device to get a GPU package)")
    lacking = missing_isa(build.get("isa") or []) if device == "cpu" else []
    if lacking:
        raise Unavailable(f"aoti: the package was compiled for a CPU with {' '.join(lacking)}, which this CPU lacks "
                          f"(built on: {build.get('cpu', 'unknown CPU')}); export it again on this host")
    return build


class AotiSession(TorchSession):
    def __init__(self, model, inputs: list[dict], device: str, build: dict):
        super().__init__(model, NAME, inputs, device)
        self.build = build

    def info(self) -> dict:
        built = {k: self.build[k] for k in ("device", "isa", "vec_isa", "gpu", "compute_capability") if k in self.build}
        return {**super().info(), "built_for": built}


def load(artifact: dict, run_dir, threads: int, device: str = "cpu") -> AotiSession:
    set_threads(threads)
    check_device(device)
    build = build_for(artifact, device)
    from torch._inductor import aoti_load_package

    path = Path(run_dir) / Path(artifact["main_file"]).parent / build["file"]
    return AotiSession(aoti_load_package(str(path)), artifact["model"]["inputs"], device, build)
