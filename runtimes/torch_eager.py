"""The source model called eagerly in PyTorch: the reference row every other path is compared with."""
from runtimes.torch_common import TorchSession, set_threads

NAME = "torch"
FORMATS = ("eager",)
FRAMEWORK = "torch"  # runs the eager artifact of a PyTorch source only
REQUIRES = ("torch",)


def load(artifact: dict, run_dir, threads: int) -> TorchSession:
    set_threads(threads)
    from toolkit.torch_source import load_source

    return TorchSession(load_source(run_dir, artifact["model"], artifact["files"][0]["path"]), NAME)
