"""AOTInductor packages (format and runtime `aoti`) and the `torch-compile` runtime on the tiny CNN, through
the real command line; the compiling tests skip where TorchInductor finds no C++ compiler."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from deploycmp import runtimes
from deploycmp.core.environment import ISA, isa_flags
from deploycmp.core.errors import Unavailable
from deploycmp.measure.targets import BUILTIN
from tests.conftest import FAST, REPO, TINY, deploycmp, rows_by_id

CXX = os.environ.get("CXX", "g++")
needs_compiler = pytest.mark.skipif(shutil.which(CXX) is None, reason=f"no C++ compiler ({CXX} is not on PATH): "
                                    "AOTInductor and torch.compile on the CPU compile C++")
BF16_CPU = any(f in isa_flags() for f in ("avx512_bf16", "amx_bf16", "bf16"))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """aoti none + bf16 and the eager source under torch-compile (server-cpu runs it), at batch 1 and 2."""
    out = tmp_path_factory.mktemp("aoti") / "run"
    proc = deploycmp("run", *TINY, "--formats", "aoti", "--quantize", "none,bf16", "--batch", "1,2", "--out", out,
                     "--no-cache", *FAST)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, rows_by_id(out), {a["id"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}


@needs_compiler
def test_aoti_rows_and_what_the_exporter_records(compiled):
    _, rows, artifacts = compiled
    none = artifacts["aoti-none"]
    assert none["main_file"].endswith("model.aoti.pt2") and none["dynamic_dims"] == ["batch"]
    info = none["exporter"]
    assert info["compile_seconds"] > 0 and info["compiler"] and info["isa"] == isa_flags() and info["device"] == "cpu"
    assert info["builds"]["cpu"]["inductor_configs"] == {"freezing": True, "cpp.dynamic_threads": True}
    for b in (1, 2):
        row = rows[f"aoti-none-aoti-server-cpu-b{b}"]
        assert row["status"] == "ok", row["error"]
        assert row["drift"]["max_abs"] < 1e-4
        assert row["runtime_info"]["built_for"]["isa"] == isa_flags()
    bf16 = [rows[f"aoti-bf16-aoti-server-cpu-b{b}"] for b in (1, 2)]
    if not BF16_CPU:
        assert all(r["status"] == "unavailable" and "bf16 needs a CPU with AVX-512 BF16 or AMX" in r["error"] for r in bf16)
        return
    assert artifacts["aoti-bf16"]["exporter"]["quantization"]["io"] == "float32"
    assert artifacts["aoti-bf16"]["dynamic_dims"] == ["batch"]  # one package for both batch sizes
    for row in bf16:
        assert row["status"] == "ok", row["error"]
        d = row["drift"]
        assert 0 < d["max_abs"] < 0.05 and d["sqnr_db"] > 30, d  # bf16 keeps 8 bits of mantissa: about 1e-3 here


@needs_compiler
def test_torch_compile_rows_count_their_compiles(compiled):
    """Each row is its own process and sees one shape (the drift pass pads its last batch), so every row compiles
    once, in its first call (the cold start's first_inference), and recompiles 0 times, at batch 1 and at batch 2
    alike: a sweep compiles anew per batch size rather than hiding a recompile. The shape change itself is
    counted: see test_a_shape_change_is_a_recompile."""
    _, rows, _ = compiled
    for b in (1, 2):
        row = rows[f"eager-none-torch-compile-server-cpu-b{b}"]
        assert row["status"] == "ok", row["error"]
        assert row["drift"]["max_abs"] < 1e-5
        c = row["runtime_info"]["compile"]
        assert (c["backend"], c["mode"], c["freezing"]) == ("inductor", "default", True)
        assert (c["compiles"], c["recompiles"], c["graph_breaks"]) == (1, 0, 0), c
        assert not any("recompiled" in w for w in row["warnings"])
        assert 0 < c["compile_seconds"] * 1e3 < row["cold_start_ms"]["first_inference"]


@needs_compiler
def test_a_shape_change_is_a_recompile(compiled):
    out, _, _ = compiled
    code = ("import json, sys, numpy as np\nfrom deploycmp.runtimes import torch_compile\n"
            "m = json.load(open(sys.argv[1] + '/manifest.json'))\n"
            "a = {**next(a for a in m['artifacts'] if a['id'] == 'eager-none'), 'model': m['model']}\n"
            "s = torch_compile.load(a, sys.argv[1], 1)\n"
            "for b in (1, 1, 2, 3):\n    s.infer({'x': np.ones((b, 3, 16, 16), np.float32)})\n"
            "print(json.dumps(s.info()['notes']))\nprint(json.dumps(s.info()['compile']))")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DEPLOYCMP_ALLOW_SOURCE": "tests.tiny_models:tiny_cnn"})  # as bench would
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = json.loads(proc.stdout.splitlines()[-1])
    # batch 2 recompiles (the batch axis becomes dynamic), batch 3 reuses that graph
    assert (c["compiles"], c["recompiles"]) == (2, 1) and "size mismatch at index 0" in c["recompile_reasons"][0], c
    assert "torch.compile recompiled 1 time(s)" in json.loads(proc.stdout.splitlines()[-2])[0]


@needs_compiler
def test_an_aoti_package_is_no_source_model(compiled):
    out, _, _ = compiled
    proc = deploycmp("export", "--model", out / "artifacts" / "aoti-none" / "model.aoti.pt2", "--input-shape",
                     "1,3,16,16", "--formats", "onnx", "--out", out.parent / "from-package")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("deploycmp: error")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "is an AOTInductor package" in errors[0] and "give the model it was compiled from" in errors[0]


def test_without_a_compiler_aoti_is_unavailable_with_the_reason(tmp_path):
    out = tmp_path / "run"
    proc = deploycmp("export", *TINY, "--formats", "aoti", "--quantize", "none,bf16", "--out", out, "--no-cache",
                     env={"CXX": "no-such-compiler-here"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    artifacts = {a["id"]: a for a in json.loads((out / "manifest.json").read_text())["artifacts"]}
    for mode in ("none", "bf16"):
        a = artifacts[f"aoti-{mode}"]
        assert a["status"] == "unavailable" and "no C++ compiler (no-such-compiler-here is not on PATH)" in a["error"]


def test_a_package_built_for_another_cpu_is_refused_before_loading():
    from deploycmp.runtimes import aoti

    lacking = next(f for f in ISA if f not in isa_flags())
    artifact = {"main_file": "artifacts/aoti-none/model.aoti.pt2", "exporter": {"builds": {"cpu": {
        "file": "model.aoti.pt2", "isa": [*isa_flags(), lacking], "cpu": "another CPU"}}}}
    with pytest.raises(Unavailable, match=f"compiled for a CPU with {lacking}, which this CPU lacks"):
        aoti.build_for(artifact, "cpu")  # what load() asks first, before torch loads the package
    with pytest.raises(Unavailable, match="compiled for cpu, not cuda"):
        aoti.build_for(artifact, "cuda")
    assert aoti.build_for({**artifact, "exporter": {"builds": {"cpu": {"file": "f", "isa": isa_flags()}}}}, "cpu")


def test_torch_compile_is_a_server_runtime_of_the_torch_source():
    assert not runtimes.opt_in("torch-compile") and not runtimes.opt_in("aoti")
    assert BUILTIN["server-cpu"].runs("torch-compile") and BUILTIN["gpu"].runs("torch-compile")
    assert not BUILTIN["mobile-cpu"].runs("torch-compile")  # no phone runs it
    assert set(runtimes.for_format("eager", "torch")) == {"torch", "torch-compile"}
    assert runtimes.for_format("eager", "keras").count("torch-compile") == 0
    assert runtimes.for_format("aoti", "torch") == ["aoti"] and runtimes.devices("aoti") == ("cpu", "cuda")
