"""The source model called eagerly in PyTorch: the reference row every other path is compared with."""
from deploycmp.runtimes.torch_common import TUNE, TorchSession, check_device, set_threads  # noqa: F401 (TUNE: this runtime's knobs)

NAME = "torch"
FORMATS = ("eager",)
FRAMEWORK = "torch"  # runs the eager artifact of a PyTorch source only
REQUIRES = ("torch",)
DEVICES = ("cpu", "cuda")


def load(artifact: dict, run_dir, threads: int, device: str = "cpu", options: dict | None = None) -> TorchSession:
    set_threads(threads, options)
    check_device(device)
    from deploycmp.sources.torch import load_source

    return TorchSession(load_source(run_dir, artifact["model"], artifact["main_file"]), NAME, artifact["model"]["inputs"], device)
