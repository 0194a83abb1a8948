"""The source model as transformers runs it: fp32 or bf16 safetensors (save_pretrained), or quantized by torchao
(quantize_ on its Linear layers, lm_head included; embeddings stay fp32) and saved as that state dict, whose
tensor subclasses hold the quantized weights: the size on disk is what torchao keeps."""
from __future__ import annotations

import shutil
from pathlib import Path

from deploycmp.runtimes.llm.transformers_llm import STATE_DICT, torchao_config

FORMAT = "transformers"
STACK = "PyTorch (transformers, torchao)"
QUANTIZATIONS = ("none", "bf16", "int8", "int4", "8da4w")
REQUIRES = ("torch", "transformers")
QUANTIZER = ("torchao",)
INSTALL_HINT = {"torchao": "pip install 'deploycmp[llm]'"}
def export(source_dir: Path, out_dir: Path, quantization: str, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    info = {"exporter": {"name": "transformers save_pretrained", "torch": torch.__version__}}
    if quantization == "none":
        shutil.copytree(source_dir, out_dir, dirs_exist_ok=True)
        return {**info, "main_file": "config.json"}
    model = AutoModelForCausalLM.from_pretrained(source_dir, local_files_only=True).eval()
    for f in Path(source_dir).iterdir():  # config and tokenizer files
        if f.is_file() and not f.name.startswith("model"):
            shutil.copy2(f, out_dir / f.name)
    if quantization == "bf16":
        model.to(torch.bfloat16).save_pretrained(out_dir)
        return {**info, "main_file": "config.json", "dtype": "bfloat16"}
    import torchao
    from torchao.quantization import quantize_

    config = torchao_config(quantization)
    quantize_(model, config)
    torch.save(model.state_dict(), out_dir / STATE_DICT)
    return {**info, "main_file": STATE_DICT, "quantizer": {
        "torchao": torchao.__version__, "config": type(config).__name__, "config_repr": repr(config)[:300],
        "where": "every torch.nn.Linear (lm_head included); embeddings and norms stay fp32"}}
