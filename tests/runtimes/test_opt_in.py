"""Opt-in runtimes (keras-predict, tf-function) run only where a target's runtimes list names them: a plain Keras
run on server-cpu plans exactly the rows it did before. Plans only; nothing here imports TensorFlow."""
import sys

from deploycmp import runtimes
from deploycmp.measure.bench import plan
from deploycmp.measure.targets import BUILTIN, parse_targets
from tests.conftest import REPO, deploycmp

OPT_IN = {"keras-predict", "tf-function"}


def _manifest(framework: str) -> dict:
    eager = {"id": "eager-none", "path": "eager-none", "format": "eager", "quantization": "none", "status": "ok",
             "dynamic_batch": True}
    saved = {**eager, "id": "savedmodel-none", "path": "savedmodel-none", "format": "savedmodel"}
    return {"model": {"name": "m", "framework": framework}, "artifacts": [eager, saved]}


def test_registry_marks_the_keras_calls_opt_in():
    assert {n for n in runtimes.RUNTIMES if runtimes.opt_in(n)} == OPT_IN
    assert set(runtimes.for_format("eager", "keras")) == {"keras"} | OPT_IN
    # Keras calls never run a PyTorch source; torch.compile runs it on the server targets
    assert set(runtimes.for_format("eager", "torch")) == {"torch", "torch-compile"}


def test_builtin_targets_do_not_run_opt_in_runtimes():
    rows = plan(_manifest("keras"), list(BUILTIN.values()), [1, 8], None)
    assert {r["runtime"] for r in rows} == {"keras", "tensorflow"}
    assert all(not BUILTIN[name].runs(rt) for name in BUILTIN for rt in OPT_IN)


def test_a_target_that_names_them_runs_them(tmp_path):
    path = tmp_path / "targets.toml"
    path.write_text('[targets.keras-calls]\nruntimes = ["keras", "keras-predict", "tf-function"]\n')
    rows = plan(_manifest("keras"), parse_targets("server-cpu,keras-calls", path), [1], None)
    by_target = {}
    for r in rows:
        by_target.setdefault(r["target"], set()).add(r["runtime"])
    assert by_target == {"server-cpu": {"keras", "tensorflow"}, "keras-calls": {"keras"} | OPT_IN}
    assert "eager-none-keras-predict-keras-calls-b1" in {r["id"] for r in rows}


def test_the_shipped_example_target_runs_every_mode():
    (target,) = parse_targets("server-cpu-modes", REPO / "examples" / "pytorch_vs_tensorflow_targets.toml")
    assert all(target.runs(rt) for rt in ("torch", "torchscript", "onnxruntime", "keras", "tensorflow", "litert", *OPT_IN))


def test_list_says_which_runtimes_are_opt_in_and_which_formats_are_deprecated():
    proc = deploycmp("list")
    assert proc.returncode == 0, proc.stderr
    formats = [line for line in proc.stdout.splitlines() if " from torch " in line or " from keras " in line]
    assert [line.split()[0] for line in formats if "deprecated upstream" in line] == ["torchscript"]
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert "opt-in" in lines["keras-predict"] and "opt-in" in lines["tf-function"] and "opt-in" not in lines["keras"]
    assert "every runtime that is not opt-in" in lines["server-cpu"]
    assert "tensorflow" not in sys.modules
