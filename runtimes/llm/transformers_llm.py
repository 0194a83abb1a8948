"""transformers' own decoding loop, as generate() runs greedy search: forward on the prompt with a DynamicCache,
then one token at a time on that cache, under torch.inference_mode. A torchao artifact is rebuilt from its config,
quantized with the same configuration and given the saved quantized state dict."""
from __future__ import annotations

from pathlib import Path

NAME = "transformers"
STACK = "PyTorch eager (transformers)"
FORMATS = ("transformers",)
REQUIRES = ("torch", "transformers")
STATE_DICT = "torchao_state_dict.pt"
GROUP = 32


def torchao_config(quantization: str):
    """The torchao configuration of a mode (the CPU ones: Int4WeightOnlyConfig's kernels need a GPU)."""
    import torch
    from torchao.quantization import (Int8DynamicActivationIntxWeightConfig, Int8WeightOnlyConfig,
                                      IntxWeightOnlyConfig)
    from torchao.quantization.granularity import PerGroup

    return {"int8": lambda: Int8WeightOnlyConfig(),
            "int4": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(GROUP)),
            "8da4w": lambda: Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                                    weight_granularity=PerGroup(GROUP)),
            }[quantization]()


class Session:
    def __init__(self, model, threads: int, quantization: str):
        import torch

        self.torch, self.model, self.threads, self.quantization = torch, model, threads, quantization
        self.past, self.last = None, None

    def _next(self, ids, cache) -> int:
        """One forward on `ids` with the cache, the logits of the last position only (as generate() asks)."""
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.as_tensor([ids], dtype=torch.long), cache=cache, use_cache=True,
                             logits_to_keep=1)
        self.past, self.last = out.cache, int(out.logits[0, -1].argmax())
        return self.last

    def prefill(self, ids: list[int], max_length: int) -> int:
        from transformers import DynamicCache

        return self._next(ids, DynamicCache(config=self.model.config))

    def step(self) -> int:
        return self._next([self.last], self.past)

    def logits(self, ids: list[int]):
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.as_tensor([ids], dtype=torch.long), use_cache=False)
        return out.logits[0].float().numpy()

    def info(self) -> dict:
        import transformers

        dtype = str(next(self.model.parameters()).dtype).replace("torch.", "")
        return {"runtime": NAME, "torch": self.torch.__version__, "transformers": transformers.__version__,
                "threads": self.torch.get_num_threads(), "dtype": dtype, "attention": self.model.config._attn_implementation,
                "quantization": self.quantization}


def load(folder: Path, artifact: dict, threads: int) -> Session:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.set_num_threads(threads)
    quantization = artifact["quantization"]
    if quantization in ("none", "bf16"):
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype="auto")
    else:
        from torchao.quantization import quantize_

        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, local_files_only=True))
        quantize_(model, torchao_config(quantization))
        # torchao's quantized tensors are tensor subclasses: weights_only=False, on a file this export wrote
        state = torch.load(Path(folder) / STATE_DICT, weights_only=False, map_location="cpu")
        model.load_state_dict(state, assign=True)
    return Session(model.eval(), threads, quantization)
