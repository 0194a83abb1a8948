"""Hugging Face transformers models as PyTorch sources: a `save_pretrained` directory (config.json) or `hf:ID` from
the local Hugging Face cache, with the head of `--task`. Inputs are read from the config (token ids in the
vocabulary, an attention mask, token types where the model has them; pixel values at the image size), and the
model is wrapped to take its inputs by position and return the task's outputs as a plain dict: a ModelOutput is a
class torch.jit.trace refuses and torch.export cannot load back."""
from __future__ import annotations

import os
from pathlib import Path

from deploycmp.core.errors import UsageError

# task -> (transformers Auto class, the outputs a deployment uses, what an architecture's name ends with)
TASKS = {
    "text-classification": ("AutoModelForSequenceClassification", ("logits",), "ForSequenceClassification"),
    "token-classification": ("AutoModelForTokenClassification", ("logits",), "ForTokenClassification"),
    "feature-extraction": ("AutoModel", ("last_hidden_state",), "Model"),
    "image-classification": ("AutoModelForImageClassification", ("logits",), "ForImageClassification"),
    # a decoder that generates: measured token by token with its KV cache (deploycmp.export.generation)
    "text-generation": ("AutoModelForCausalLM", ("logits",), "ForCausalLM"),
}
GENERATION = "text-generation"
DEFAULT_SEQUENCE = 128
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def is_hf(spec: str) -> bool:
    return spec.startswith("hf:") or (Path(spec).is_dir() and (Path(spec) / "config.json").is_file())


def _location(spec: str) -> str:
    """The directory or hub id to load from; hub ids only from the local cache (never the network)."""
    if spec.startswith("hf:"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no minutes of retries against an unreachable hub
        return spec[3:]
    return spec


def _quiet_imports() -> None:
    """transformers' model classes import torchao, whose pytree registrations log deprecation warnings through
    torch's logger on every command line; they say nothing about the user's model."""
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def load_config(spec: str):
    from transformers import AutoConfig

    _quiet_imports()

    where = _location(spec)
    try:
        return AutoConfig.from_pretrained(where, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        if spec.startswith("hf:"):
            raise UsageError(f"--model {spec}: not in the local Hugging Face cache (deploycmp does not download; "
                             f"fetch it with `hf download {where}` where there is a network, or give a "
                             f"save_pretrained directory)") from e
        raise UsageError(f"--model {spec}: config.json could not be read as a transformers config: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    missing = (f"--model {spec} has no tokenizer deploycmp can load (tokenizer.json, vocab.txt ...) to turn --data "
               f"texts into token ids")
    try:
        tokenizer = AutoTokenizer.from_pretrained(_location(spec), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{missing}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):  # transformers builds an empty one from a config
        raise UsageError(f"{missing}: it would know only its special tokens, every word [UNK]")
    return tokenizer


def task_of(config, task: str | None, spec: str) -> str:
    """--task, else the one the config's architecture names (BertForSequenceClassification: text-classification)."""
    if task:
        return task
    for arch in getattr(config, "architectures", None) or []:
        for name, (_, _, suffix) in TASKS.items():
            if arch.endswith(suffix):
                return name
    raise UsageError(f"--model {spec}: its config names no architecture deploycmp knows the task of; give --task "
                     f"({', '.join(TASKS)})")


def generates(spec: str, task: str | None) -> bool:
    """Whether --model is a Hugging Face decoder measured as one that generates (--task text-generation, or a
    *ForCausalLM config without --task)."""
    return is_hf(spec) and (task == GENERATION or (task is None and task_of(load_config(spec), None, spec) == GENERATION))


def wrap(inner, inputs: list[str], outputs: tuple[str, ...]):
    """The transformers model called with its inputs by position, returning {output name: tensor}."""
    import torch

    class HFTask(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def call(self, *args):
            out = self.inner(**dict(zip(inputs, args)))
            return {name: out[name] for name in outputs}

    # forward takes the inputs by name (forward(self, input_ids, attention_mask, ...)), not *args: exporters match
    # dynamic_shapes and input names against forward's own parameters
    if all(name.isidentifier() for name in inputs):
        params = ", ".join(inputs)
        scope: dict = {}
        exec(f"def forward(self, {params}):\n    return self.call({params})\n", scope)
        HFTask.forward = scope["forward"]
    else:
        HFTask.forward = HFTask.call
    return HFTask().eval()


def build_model(config, task: str, spec: str, weights: str, seed: int):
    """(the transformers model with the task's head, the weights record, warnings)."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights 100%" is not for a command line's stderr
    cls = getattr(transformers, TASKS[task][0])
    torch.manual_seed(seed)
    warnings = []
    if weights in ("auto",) and not spec.startswith("hf:") and not any((Path(spec) / f).is_file() for f in WEIGHT_FILES):
        warnings.append(f"{spec} has no weights file ({', '.join(WEIGHT_FILES[::2])}): random weights from its config")
        weights_used = "random"
    else:
        weights_used = weights
    if weights_used in ("random", "random-raw"):
        return cls.from_config(config), weights_used, warnings
    if weights_used == "auto":
        try:
            model = cls.from_pretrained(_location(spec), config=config, local_files_only=True)
        except (OSError, ValueError) as e:
            raise UsageError(f"--model {spec}: its weights could not be loaded: {str(e).splitlines()[0]}") from e
        return model, "pretrained", warnings
    if weights == "imagenet":
        raise UsageError("--weights imagenet applies to torchvision models; a Hugging Face model brings its own")
    return cls.from_config(config), weights, warnings  # a state_dict file: torch_source applies it


def input_specs(config, model, task: str, sequence: str = "sequence") -> list:
    """The inputs a deployment feeds, read from the config and forward()'s signature."""
    import inspect

    from deploycmp.core.specs import InputSpec

    params = inspect.signature(model.forward).parameters
    if task == "image-classification":
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else int(size[0])
        return [InputSpec("pixel_values", "float32", ["batch", getattr(config, "num_channels", 3), size, size],
                          layout="NCHW")]
    specs = [InputSpec("input_ids", "int64", ["batch", sequence], value_range=[0, int(config.vocab_size)])]
    if "attention_mask" in params:
        specs.append(InputSpec("attention_mask", "int64", ["batch", sequence]))
    types = getattr(config, "type_vocab_size", 0) or 0
    if "token_type_ids" in params and types > 1:
        specs.append(InputSpec("token_type_ids", "int64", ["batch", sequence], value_range=[0, int(types)]))
    return specs


def default_sequence(most: int | None) -> int:
    """The sequence length measured when no --shape gives one: 128 tokens, at most the model's `most` positions."""
    return min(DEFAULT_SEQUENCE, int(most)) if most else DEFAULT_SEQUENCE


def default_sizes(config) -> dict:
    """Sizes of the named dimensions when no --shape gives them (see default_sequence)."""
    return {"sequence": default_sequence(getattr(config, "max_position_embeddings", None))}


def save(model, folder: Path) -> None:
    """The config beside the weights, so that a worker rebuilds the architecture from the run directory alone."""
    model.inner.config.save_pretrained(folder)


def rebuild(folder: Path, record: dict):
    """The wrapped model of `record` from the config saved in `folder` (weights loaded by the caller)."""
    import transformers
    from transformers import AutoConfig

    _quiet_imports()
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    task = record["task"]
    inner = getattr(transformers, TASKS[task][0]).from_config(config)
    return wrap(inner.eval(), [i["name"] for i in record["inputs"]], TASKS[task][1])
