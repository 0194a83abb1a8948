"""TorchScript modules through torch.jit.load."""
from pathlib import Path

from runtimes.torch_common import TorchSession, set_threads

NAME = "torchscript"
FORMATS = ("torchscript",)
REQUIRES = ("torch",)


def load(artifact: dict, run_dir, threads: int) -> TorchSession:
    set_threads(threads)
    import torch

    module = torch.jit.load(str(Path(run_dir) / artifact["main_file"]), map_location="cpu")
    module.eval()
    return TorchSession(module, NAME)
