"""What the three PyTorch runtimes share: threads, device placement, tensor conversion, a no-grad call."""
from __future__ import annotations

from deploycmp.runtimes.base import Session, spec_metadata
from deploycmp.sources.torch_feed import example, set_threads  # noqa: F401 (the runtimes' threads and feeds)


# what `bench --tune` may change in the eager PyTorch runtimes (first value: what deploycmp runs untuned):
# oneDNN (mkldnn) kernels for convolutions and linear layers, or PyTorch's own
TUNE = {"onednn": (True, False)}


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        from deploycmp.core.errors import Unavailable

        raise Unavailable(f"torch {torch.__version__} sees no CUDA device"
                          + ("" if torch.version.cuda else " (a CPU-only build)"))


class TorchSession(Session):
    def __init__(self, module, runtime: str, inputs: list[dict], device: str = "cpu"):
        import torch

        self._torch = torch
        self.inputs = inputs
        self.device = device
        self.module = module.to(device) if device != "cpu" and hasattr(module, "to") else module
        self.runtime = runtime
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def info(self) -> dict:
        torch = self._torch
        info = {"runtime": self.runtime, "version": torch.__version__, "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(), "device": self.device}
        if self.device == "cuda":
            info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
            # what PyTorch lets the GPU do to float32 on its own: TF32 (10-bit mantissa) matmuls and convolutions
            tf32 = [what for what, on in (("matmuls", torch.backends.cuda.matmul.allow_tf32),
                                          ("convolutions", torch.backends.cudnn.allow_tf32)) if on]
            if tf32:
                info["computes_in"] = f"fp32 with TF32 {' and '.join(tf32)}"
                info["notes"] = [f"PyTorch computes float32 {' and '.join(tf32)} in TF32 on this GPU by default "
                                 "(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)"]
        return info

    def input_metadata(self):
        return spec_metadata([i for i in self.inputs if i["shape"]])

    def prepare(self, feed: dict):
        """0-d inputs (constants) are passed from the manifest's value, as a Python number where forward() takes
        one: the feed's copy of them (one per sample) is left out of the checks."""
        scalars = {i["name"] for i in self.inputs if not i["shape"]}
        return super().prepare({k: a for k, a in feed.items() if k not in scalars})

    def prepare_native(self, feed: dict):
        from deploycmp.core.specs import inputs_from_dicts

        args = example(feed, inputs_from_dicts(self.inputs))
        return tuple(t.to(self.device) if hasattr(t, "to") else t for t in args) if self.device != "cpu" else args

    def run(self, prepared):
        with self._torch.inference_mode():
            return self.module(*prepared)

    def synchronize(self) -> None:
        if self.device == "cuda":
            self._torch.cuda.synchronize()

    def cuda_events(self):
        if self.device != "cuda":
            return None
        return self._torch.cuda.Event(enable_timing=True), self._torch.cuda.Event(enable_timing=True)

    def device_memory_mb(self) -> float | None:
        return self._torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None
