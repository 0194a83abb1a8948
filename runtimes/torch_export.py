"""torch.export programs (.pt2) through torch.export.load, run as their unlifted module."""
from pathlib import Path

from deploycmp.runtimes.torch_common import TUNE, TorchSession, check_device, set_threads  # noqa: F401 (TUNE: this runtime's knobs)

NAME = "torch-export"
FORMATS = ("torch-export",)
REQUIRES = ("torch",)
DEVICES = ("cpu", "cuda")


def load(artifact: dict, run_dir, threads: int, device: str = "cpu", options: dict | None = None) -> TorchSession:
    set_threads(threads, options)
    check_device(device)
    import torch

    program = torch.export.load(str(Path(run_dir) / artifact["main_file"]))
    return TorchSession(program.module(), NAME, artifact["model"]["inputs"], device)
