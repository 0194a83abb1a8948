"""ExecuTorch's LLM export (python -m executorch.extension.llm.export.export_llm) to a .pte for XNNPACK, with its KV
cache and its custom SDPA op, as its Llama/Qwen examples export: the Hugging Face checkpoint converted to the
llama_transformer layout ExecuTorch's own model class takes (params.json + checkpoint.pth, HF's RoPE layout kept
with use_hf_rope), then export_llm with XNNPACK delegation and, for int8/int4/8da4w, its source-transform
quantization (qmode int8: int8 weights per channel; 8da4w: int4 weights in groups of 32 with int8 dynamic
activations, the recipe XNNPACK's kernels are built for)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FORMAT = "executorch-llm"
STACK = "ExecuTorch (XNNPACK)"
QUANTIZATIONS = ("none", "int8", "8da4w")
UNSUPPORTED = {"bf16": "executorch-llm: XNNPACK runs fp32 (and fp16 on ARM); bf16 LLM export is for other backends",
               "int4": "executorch-llm: XNNPACK's int4 recipe is 8da4w (see that row); qmode 4w exported here but its "
                       "program's logits had nothing to do with fp32's (KL 77 on a tiny Llama, ExecuTorch 1.5.1)"}
REQUIRES = ("executorch", "torch", "safetensors")
QMODE = {"int8": "int8", "8da4w": "8da4w"}
GROUP = 32
PREFILL_CHUNK = 128  # export.max_seq_length: the most tokens one forward takes; longer prompts go in chunks
MOST_CONTEXT = 2048  # export.max_context_length (the KV cache), at most the model's own positions
PTE = "model.pte"
# Hugging Face model types whose layers ExecuTorch's llama_transformer reproduces (its llama3, qwen2_5, qwen3 classes)
KNOWN = ("llama", "qwen2", "qwen3")
_TOP = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
        "lm_head.weight": "output.weight"}
_LAYER = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
          "self_attn.o_proj": "attention.wo", "self_attn.q_norm": "attention.q_norm_fn",
          "self_attn.k_norm": "attention.k_norm_fn", "input_layernorm": "attention_norm",
          "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "feed_forward.w1",
          "mlp.down_proj": "feed_forward.w2", "mlp.up_proj": "feed_forward.w3"}


def context_of(config: dict) -> int:
    return min(int(config.get("max_position_embeddings") or MOST_CONTEXT), MOST_CONTEXT)


def params_of(config: dict) -> dict:
    """ExecuTorch's ModelArgs (params.json) for a Hugging Face config."""
    if config.get("model_type") not in KNOWN:
        raise NotImplementedError(f"executorch-llm: ExecuTorch's LLM export takes its own model classes (Llama, "
                                  f"Qwen2/2.5, Qwen3 here), not {config.get('model_type')!r}")
    rope = (config.get("rope_parameters") or {}).get("rope_theta") or config.get("rope_theta") or 10000.0
    qwen3 = config["model_type"] == "qwen3"
    return {"dim": config["hidden_size"], "n_layers": config["num_hidden_layers"],
            "n_heads": config["num_attention_heads"],
            "n_kv_heads": config.get("num_key_value_heads") or config["num_attention_heads"],
            "vocab_size": config["vocab_size"], "hidden_dim": config["intermediate_size"],
            "head_dim": config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"],
            "norm_eps": config["rms_norm_eps"], "rope_theta": float(rope), "use_hf_rope": True,
            "attention_qkv_bias": config["model_type"] == "qwen2" or bool(config.get("attention_bias")),
            "use_qk_norm": qwen3, "qk_norm_before_rope": qwen3}


def checkpoint_of(source_dir: Path) -> dict:
    """The Hugging Face state dict renamed to llama_transformer's keys (tied embeddings become the output too)."""
    from safetensors.torch import load_file

    state = {}
    for shard in sorted(Path(source_dir).glob("*.safetensors")):
        for key, value in load_file(shard).items():
            if key in _TOP:
                state[_TOP[key]] = value
                continue
            _, _, layer, *rest = key.split(".")
            state[f"layers.{layer}.{_LAYER['.'.join(rest[:-1])]}.{rest[-1]}"] = value
    state.setdefault("output.weight", state["tok_embeddings.weight"])
    return state


def export(source_dir: Path, out_dir: Path, quantization: str, threads: int) -> dict:
    import importlib.metadata as md

    import torch

    config = json.loads((Path(source_dir) / "config.json").read_text())
    params = params_of(config)
    # outside the artifact's folder: export_llm takes a checkpoint whose path names "int8" or "8da4w" for one that is
    # already quantized (examples/models/llama/model.py), and the folders are named after their mode
    work = Path(tempfile.mkdtemp(prefix="deploycmp-executorch-"))
    (work / "params.json").write_text(json.dumps(params))
    torch.save(checkpoint_of(source_dir), work / "checkpoint.pth")
    eos = config.get("eos_token_id")
    metadata = {"get_bos_id": config.get("bos_token_id") or 0,
                "get_eos_ids": eos if isinstance(eos, list) else [eos if eos is not None else 0]}
    overrides = ["base.model_class=llama3", f"base.params={work / 'params.json'}",
                 f"base.checkpoint={work / 'checkpoint.pth'}", f"base.metadata='{json.dumps(metadata)}'",
                 "model.use_kv_cache=True", "model.use_sdpa_with_kv_cache=True", "model.enable_dynamic_shape=True",
                 "backend.xnnpack.enabled=True", f"export.max_seq_length={PREFILL_CHUNK}",
                 f"export.max_context_length={context_of(config)}", f"export.output_name={Path(out_dir).resolve() / PTE}"]
    if quantization != "none":
        overrides += [f"quantization.qmode={QMODE[quantization]}", f"quantization.group_size={GROUP}"]
    command = [sys.executable, "-m", "executorch.extension.llm.export.export_llm", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, cwd=work)
    sys.stdout.write(done.stdout[-20000:])
    sys.stderr.write(done.stderr[-20000:])
    shutil.rmtree(work, ignore_errors=True)  # the export's inputs (the converted checkpoint) and its hydra logs
    if done.returncode != 0 or not (Path(out_dir) / PTE).is_file():
        last = [ln for ln in done.stderr.splitlines() if ln.strip() and "Warning" not in ln][-1:] or ["no output"]
        raise RuntimeError(f"export_llm exited {done.returncode}: {last[0][:240]}")
    info = {"exporter": {"name": "executorch.extension.llm.export.export_llm", "executorch": md.version("executorch"),
                         "command": "python -m executorch.extension.llm.export.export_llm "
                                    + " ".join(o for o in overrides if not o.startswith(("base.params", "base.checkpoint",
                                                                                          "export.output_name")))},
            "main_file": PTE, "context": context_of(config), "prefill_chunk": PREFILL_CHUNK}
    if quantization != "none":
        info["quantizer"] = {"what": {"int8": "qmode int8: int8 weights per channel, fp32 activations",
                                      "8da4w": f"qmode 8da4w: int4 weights in groups of {GROUP}, int8 dynamic "
                                               "activations (XNNPACK's recipe)"}[quantization]}
    return info

