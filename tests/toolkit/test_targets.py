"""Targets: built-ins, a user's TOML file and every way it can be wrong."""
import pytest

from tests.conftest import deploycmp
from deploycmp.core import gpu
from deploycmp.core.errors import UsageError
from deploycmp.measure.targets import BUILTIN, load_targets_file, parse_targets, usable_cpus, worker_env


def _file(tmp_path, text):
    path = tmp_path / "targets.toml"
    path.write_text(text)
    return path


def test_builtins():
    server, mobile, gpu_target = parse_targets("server-cpu,mobile-cpu,gpu,server-cpu")
    assert server.resolved_cpus() == usable_cpus() and server.resolved_threads() == len(usable_cpus())
    assert mobile.resolved_cpus() == usable_cpus()[-1:] and mobile.resolved_threads() == 1
    assert mobile.runs("litert") and mobile.runs("executorch") and mobile.runs("onnxruntime")
    assert not mobile.runs("torch") and not mobile.runs("tensorflow")
    assert "not a phone" in mobile.describe() and mobile.memory_budget_mb == 512
    assert gpu_target.device == "cuda" and not gpu_target.runs("litert")
    assert mobile.resolved_threads(override=3) == 3
    if not gpu.names():
        assert "no CUDA GPU" in gpu_target.unavailable_reason()
    assert worker_env(1)["CUDA_VISIBLE_DEVICES"] == "" and "CUDA_VISIBLE_DEVICES" not in worker_env(1, "cuda")


def test_user_file(tmp_path):
    path = _file(tmp_path, """
[targets.mobile-4t]
base = "mobile-cpu"
threads = 4
memory_budget_mb = 1024

[targets.first-core]
cpus = [%d]
runtimes = ["onnxruntime", "litert"]
description = "my board's big core"
""" % usable_cpus()[0])
    targets = parse_targets("mobile-4t,first-core,server-cpu", path)
    m4, first, _ = targets
    assert m4.resolved_threads() == 4 and m4.resolved_cpus() == usable_cpus()[-1:] and m4.runtimes == BUILTIN["mobile-cpu"].runtimes
    assert m4.memory_budget_mb == 1024 and "4 thread(s)" in m4.describe() and "1024 MB" in m4.describe()
    assert first.resolved_cpus() == usable_cpus()[:1] and first.describe() == "my board's big core"
    assert m4.unavailable_reason() is None and first.unavailable_reason() is None


def test_targets_that_do_not_fit_this_host_are_unavailable(tmp_path):
    path = _file(tmp_path, "[targets.big]\ncores = 4096\n[targets.elsewhere]\ncpus = [4095]\n")
    big, elsewhere = parse_targets("big,elsewhere", path)
    assert "needs 4096 cores" in big.unavailable_reason()
    assert "not usable on this host" in elsewhere.unavailable_reason()


@pytest.mark.parametrize("text, message", [
    ("[targets.a]\nthreds = 2\n", "unknown key 'threds'"),
    ("[targets.a]\nthreads = 0\n", "threads must be a positive integer, not 0"),
    ("[targets.a]\nthreads = -2\n", "threads must be a positive integer, not -2"),
    ("[targets.a]\nthreads = \"4\"\n", "threads must be a positive integer, not '4'"),
    ("[targets.a]\nthreads = 1.5\n", "threads must be a positive integer, not 1.5"),
    ("[targets.a]\nthreads = true\n", "threads must be a positive integer, not True"),
    ("[targets.a]\ncores = 0\n", "cores must be a positive integer"),
    ("[targets.a]\ncores = 1\ncpus = [0]\n", "not both"),
    ("[targets.a]\ncpus = []\n", "cpus must be a list of core numbers"),
    ("[targets.a]\ncpus = [-1]\n", "cpus must be a list of core numbers"),
    ("[targets.a]\ndevice = \"tpu\"\n", "device must be one of cpu, cuda"),
    ("[targets.a]\nruntimes = [\"tensorrt\"]\n", "unknown runtime 'tensorrt'"),
    ("[targets.a]\nruntimes = \"litert\"\n", "runtimes must be a list"),
    ("[targets.a]\nmemory_budget_mb = -5\n", "memory_budget_mb must be a positive number"),
    ("[targets.a]\nbase = \"phone\"\n", "base 'phone' is not a built-in target"),
    ("[targets.mobile-cpu]\nthreads = 2\n", "has a built-in target's name"),
    ("[targets.\"a b\"]\nthreads = 2\n", "names may hold letters, digits"),
    ("[targets]\na = 1\n", "expected a table [targets.a]"),
    ("[target.a]\nthreads = 2\n", "expected [targets.NAME] tables only, found 'target'"),
    ("[targets.a\nthreads = 2\n", "not valid TOML"),
])
def test_bad_files(tmp_path, text, message):
    with pytest.raises(UsageError) as e:
        load_targets_file(_file(tmp_path, text))
    assert message in str(e.value)


def test_unknown_names_and_missing_file(tmp_path):
    with pytest.raises(UsageError, match="unknown target 'phone'.*--targets-file"):
        parse_targets("server-cpu,phone")
    with pytest.raises(UsageError, match="cannot read it"):
        parse_targets("server-cpu", tmp_path / "absent.toml")


def test_cli_says_one_line(tmp_path):
    path = _file(tmp_path, "[targets.a]\nthreads = 0\n")
    proc = deploycmp("run", "--model", "resnet18", "--target", "a", "--targets-file", path, "--out", tmp_path / "r")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"deploycmp: error: {path}: target 'a': threads must be a positive integer, not 0"]
    assert not (tmp_path / "r").exists()  # checked before any export


def test_example_file_parses():
    from tests.conftest import REPO

    mobile, server = parse_targets("mobile-2t,server-1t", REPO / "examples" / "targets.toml")
    assert mobile.runtimes == BUILTIN["mobile-cpu"].runtimes and mobile.resolved_threads() == 2 and mobile.cores == 2
    assert server.resolved_threads() == 1 and server.runtimes is None
