"""--help must answer at once: no module imports a heavy framework at import time."""
import subprocess
import sys

HEAVY = ("torch", "torchvision", "tensorflow", "onnx", "onnxruntime", "litert_torch", "executorch")


def test_cli_and_registries_import_no_framework():
    code = ("import sys, deploycmp.cli, deploycmp.bench, deploycmp.export, deploycmp.report, deploycmp.worker\nfrom deploycmp import exporters, runtimes\n"
            "for name in list(exporters.EXPORTERS): exporters.get(name)\n"
            "for name in list(runtimes.RUNTIMES): runtimes.get(name)\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_runs():
    proc = subprocess.run([sys.executable, "-m", "deploycmp.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "export" in proc.stdout and "validate" in proc.stdout
