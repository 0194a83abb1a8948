"""What every result carries: framework versions, host, Python, command line; and the machine's matmul peak."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys

FRAMEWORKS = (
    "deploycmp", "torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "tensorflow",
    "tensorflow-cpu", "keras", "tf2onnx", "ai-edge-litert", "litert-torch", "ai-edge-quantizer", "executorch",
    "onnx2tf", "keras-hub", "transformers", "openvino", "nncf", "numpy",
)


def versions() -> dict:
    """Installed versions, read from package metadata (nothing is imported)."""
    out = {}
    for name in FRAMEWORKS:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _cpuinfo(*keys: str) -> str | None:
    """The value of the first line of /proc/cpuinfo that starts with one of `keys` (Linux); None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(keys):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "unknown"


# the ISA extensions that decide int8 and bf16 speed (x86: /proc/cpuinfo flags; ARM: Features)
ISA = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
       "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "bf16", "sve", "sve2")


def cpu_flags() -> set[str]:
    """Every feature flag of this CPU, read from /proc/cpuinfo (Linux; x86 flags, ARM Features); empty where it
    cannot be read."""
    return set((_cpuinfo("flags", "Features") or "").split())


def isa_flags() -> list[str]:
    """Which of ISA this CPU has; [] where it cannot be read."""
    have = cpu_flags()
    return [f for f in ISA if f in have]


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def host() -> dict:
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "isa": isa_flags(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_gb": _memory_gb(),
        "python": platform.python_version(),
    }


def environment() -> dict:
    return {"versions": versions(), "host": host(), "command": sys.argv[:]}


def _best_gflops(matmul, a, b, n: int, repeats: int) -> float:
    import time

    matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def probe_size(threads: int) -> int:
    """The matmul's n: 1024 up to 4 threads (its best of 10 calls gave the same GFLOP/s as 2048's best of 3 on the
    2-core EPYC, in a fifth of the time: 0.3 s), 2048 above, where a smaller matmul cannot keep every core busy."""
    return 1024 if threads <= 4 else 2048


def _clock_ghz() -> float | None:
    """The CPU's highest clock where Linux tells it (cpufreq), else the clock /proc/cpuinfo reports."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            return int(f.read()) / 1e6
    except (OSError, ValueError):
        pass
    try:
        return float(_cpuinfo("cpu MHz")) / 1e3
    except (TypeError, ValueError):
        return None


def theoretical_gflops(threads: int) -> dict | None:
    """An fp32 upper bound from the clock and the widest SIMD: threads x GHz x lanes x 2 (FMA) x 2 FMA units.
    Two FMA units of full width is an assumption (some cores, e.g. AMD Zen 4 on AVX-512, have half that)."""
    flags, ghz = isa_flags(), _clock_ghz()
    lanes = 16 if "avx512f" in flags else 8 if {"avx2", "fma"} <= set(flags) else 4 if flags else None
    if not ghz or not lanes:
        return None
    return {"gflops": threads * ghz * lanes * 2 * 2, "clock_ghz": round(ghz, 3), "fp32_lanes": lanes,
            "assumes": "2 FMA units of full SIMD width per core, at the clock shown"}


def matmul_peak(threads: int, n: int | None = None, repeats: int = 10) -> dict:
    """The best fp32 GFLOP/s of an n x n matmul (probe_size) among the GEMMs here (numpy's BLAS, torch's oneDNN/MKL)
    at `threads`, which probe gave it, and the theoretical bound beside it."""
    import numpy as np

    n = n or probe_size(threads)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    probes = {"numpy": _best_gflops(np.matmul, a, b, n, repeats)}
    try:
        import torch

        torch.set_num_threads(threads)
        with torch.no_grad():
            probes["torch"] = _best_gflops(torch.mm, torch.from_numpy(a), torch.from_numpy(b), n, repeats)
    except ImportError:
        pass
    best = max(probes, key=probes.get)
    return {"peak_gflops": probes[best], "probe": best, "probes": probes, "threads": threads,
            "matmul": f"{n} x {n} fp32, the fastest of {repeats} calls after an untimed one",
            "theoretical": theoretical_gflops(threads)}
