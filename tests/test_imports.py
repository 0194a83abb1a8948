"""--help must answer at once: no module imports a heavy framework at import time."""
import shutil
import subprocess
import sys
import zipfile

from tests.conftest import REPO, deploycmp, plugin_env

HEAVY = ("torch", "torchvision", "tensorflow", "onnx", "onnxruntime", "litert_torch", "executorch")


def test_cli_and_registries_import_no_framework():
    code = ("import sys, deploycmp.cli, deploycmp.measure.bench, deploycmp.export.matrix, deploycmp.report.write, deploycmp.measure.row_worker\nfrom deploycmp import exporters, runtimes\n"
            "for name in list(exporters.EXPORTERS): exporters.get(name)\n"
            "for name in list(runtimes.RUNTIMES): runtimes.get(name)\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_runs():
    proc = subprocess.run([sys.executable, "-m", "deploycmp.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "export" in proc.stdout and "validate" in proc.stdout


def test_installed_under_one_namespace(tmp_path):
    """deploycmp, deploycmp.exporters and deploycmp.runtimes import from anywhere; no generic top-level names."""
    code = ("import importlib.util, deploycmp, deploycmp.exporters, deploycmp.runtimes, deploycmp.cli\n"
            "print([n for n in ('toolkit', 'exporters', 'runtimes') if importlib.util.find_spec(n)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.strip() == "[]"


def test_a_wheel_holds_only_the_deploycmp_package(tmp_path):
    src = shutil.copytree(REPO, tmp_path / "src", ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    str(src)], check=True, capture_output=True)  # a copy: pip builds in the source tree
    wheel = next(tmp_path.glob("deploycmp-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        top = {n.split("/")[0] for n in z.namelist() if not n.split("/")[0].endswith(".dist-info")}
        assert top == {"deploycmp"}
        names = set(z.namelist())
    assert {"deploycmp/cli/__init__.py", "deploycmp/cli/__main__.py", "deploycmp/exporters/onnx.py", "deploycmp/runtimes/litert.py"} <= names


def test_plugins_register_through_entry_points(tmp_path):
    env = plugin_env(tmp_path, "deploycmp.exporters", "onnx-again", "deploycmp.exporters.onnx")
    proc = deploycmp("list", env=env)
    assert proc.returncode == 0 and "onnx-again" in proc.stdout, proc.stderr
