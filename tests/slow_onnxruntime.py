"""Test-only runtime: ONNX Runtime with a sleep added to every call, registered over the real one by an entry
point (group deploycmp.runtimes: onnxruntime = tests.slow_onnxruntime, see tests/conftest.plugin_env), so a baseline comparison has a row that really got slower."""
import time

from deploycmp.runtimes.onnxruntime import DEVICES, FORMATS, NAME, ON_DEVICE, REQUIRES, OrtSession  # noqa: F401
from deploycmp.runtimes.onnxruntime import load as load_fast

DELAY_S = 0.02


class SlowSession(OrtSession):
    def run(self, prepared):
        time.sleep(DELAY_S)
        return super().run(prepared)


def load(artifact, run_dir, threads, device="cpu"):
    session = load_fast(artifact, run_dir, threads, device)
    session.__class__ = SlowSession
    return session
