"""TorchScript modules through torch.jit.load."""
from pathlib import Path

from deploycmp.runtimes.torch_common import TUNE, TorchSession, check_device, set_threads  # noqa: F401 (TUNE: this runtime's knobs)

NAME = "torchscript"
FORMATS = ("torchscript",)
REQUIRES = ("torch",)
DEVICES = ("cpu", "cuda")


def load(artifact: dict, run_dir, threads: int, device: str = "cpu", options: dict | None = None) -> TorchSession:
    set_threads(threads, options)
    check_device(device)
    import torch

    module = torch.jit.load(str(Path(run_dir) / artifact["main_file"]), map_location=device)
    module.eval()
    return TorchSession(module, NAME, artifact["model"]["inputs"], device)
