"""torch.export programs (.pt2) through torch.export.load, run as their unlifted module."""
from pathlib import Path

from runtimes.torch_common import TorchSession, set_threads

NAME = "torch-export"
FORMATS = ("torch-export",)
REQUIRES = ("torch",)


def load(artifact: dict, run_dir, threads: int) -> TorchSession:
    set_threads(threads)
    import torch

    program = torch.export.load(str(Path(run_dir) / artifact["main_file"]))
    return TorchSession(program.module(), NAME)
