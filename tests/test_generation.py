"""Language models that generate (--task text-generation): tiny Llama and Qwen2 decoders from configs (random weights,
a BPE tokenizer trained here on the standard library's sources), each stack and quantization a row with TTFT, decode
tokens/s, memory and teacher-forced drift against transformers fp32; the release gate on KL and perplexity."""
import glob
import json

import numpy as np
import pytest

from tests.conftest import FAST, deploycmp, rows_by_id

transformers = pytest.importorskip("transformers")
pytest.importorskip("onnxruntime_genai")

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, bos_token_id=0, eos_token_id=1,
            tie_word_embeddings=False)
SHAPES = ["--shape", "prompt=16", "--shape", "new_tokens=8"]


def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY["vocab_size"], special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train(sorted(glob.glob(f"{__import__('os').path.dirname(json.__file__)}/*.py")), trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def decoder_dir(root, arch: str):
    import torch

    config = getattr(transformers, f"{arch}Config")(**TINY)
    torch.manual_seed(0)
    model = getattr(transformers, f"{arch}ForCausalLM")(config)
    out = root / arch.lower()
    model.save_pretrained(out)
    tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    out = root / "run"
    proc = deploycmp("run", "--model", decoder_dir(root, "Llama"), "--task", "text-generation",
                     "--formats", "all", "--quantize", "none,int8,int4,8da4w", *SHAPES, "--out", out, *FAST)
    return proc, out


def test_llama_every_stack_and_mode_is_a_row_with_generation_figures(llama_run):
    proc, out = llama_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_id(out)
    ok = {(r["format"], r["quantization"]) for r in rows.values() if r["status"] == "ok"}
    assert {(f, q) for f in ("transformers", "ort-genai") for q in ("none", "int8", "int4")} <= ok, sorted(ok)
    assert {("executorch-llm", q) for q in ("none", "int8", "8da4w")} | {("transformers", "8da4w")} <= ok, sorted(ok)
    for row in rows.values():
        if row["status"] != "ok":
            assert row["status"] == "unavailable" and row["error"].startswith(row["format"]), row
            continue
        g, d = row["generation"], row["drift"]
        assert g["requests"] >= 3 and g["prompt_tokens"] == 16 and g["new_tokens"] == 8
        assert 0 < g["ttft_ms"]["p50"] <= g["e2e_ms"]["p50"] and g["itl_ms"]["p50"] > 0 and g["decode_tokens_per_s"] > 0
        assert row["latency_ms"]["p50"] == g["itl_ms"]["p50"] and row["throughput_per_s"] == g["decode_tokens_per_s"]
        assert row["peak_rss_mb"] > 0 and row["size_bytes"] > 0 and row["cold_start_ms"]["load"] > 0
        assert d["positions"] == 255 and np.isfinite(d["kl_mean"]) and d["perplexity_reference"] > 1
        assert d["greedy"]["tokens"] == 8
    # every stack the issue names is a row: the ones deploycmp does not export to yet say so
    assert {r["format"] for r in rows.values() if r["status"] == "unavailable"} >= {"litert-lm", "openvino-genai", "gguf"}


def test_fp32_paths_match_the_reference_and_int4_drifts_more_than_int8(llama_run):
    _, out = llama_run
    rows = {(r["format"], r["quantization"]): r for r in rows_by_id(out).values() if r["status"] == "ok"}
    for fmt, four in (("transformers", "int4"), ("ort-genai", "int4"), ("executorch-llm", "8da4w")):
        fp32, int8, int4 = (rows[(fmt, q)]["drift"] for q in ("none", "int8", four))
        assert fp32["kl_mean"] < 1e-9 and fp32["top1_agreement"] == 1.0 and fp32["greedy"]["first_divergence"] is None
        assert abs(fp32["perplexity_change_pct"]) < 1e-3
        assert int4["kl_mean"] > int8["kl_mean"] > fp32["kl_mean"], (fmt, int4["kl_mean"], int8["kl_mean"])
    # ORT GenAI's and ExecuTorch's models are other graphs of the same weights: their fp32 logits are transformers'
    # within rounding
    assert rows[("ort-genai", "none")]["drift"]["logit_sqnr_db"] > 80
    assert rows[("executorch-llm", "none")]["drift"]["logit_sqnr_db"] > 80
    report = (out / "report.md").read_text()
    assert "TTFT ms" in report and "tok/s" in report and "ppl Δ%" in report


def test_the_gate_reads_kl_perplexity_and_token_agreement(llama_run):
    _, out = llama_run
    rows = rows_by_id(out)
    int4 = next(r for r in rows.values() if r["format"] == "ort-genai" and r["quantization"] == "int4")
    passing = deploycmp("validate", out, "--max-kl", str(int4["drift"]["kl_mean"] * 2))
    assert passing.returncode == 0, passing.stdout + passing.stderr
    failing = deploycmp("validate", out, "--max-kl", str(int4["drift"]["kl_mean"] / 2))
    assert failing.returncode == 1 and f"FAIL  {int4['id']}: KL mean" in failing.stdout, failing.stdout
    agreement = deploycmp("validate", out, "--min-token-agreement", "100")
    assert agreement.returncode == 1 and "same next token on" in agreement.stdout
    bad = deploycmp("validate", out, "--min-token-agreement", "150")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "percentage" in bad.stderr


def test_qwen2_directory_without_task_is_taken_as_a_decoder(tmp_path):
    out = tmp_path / "run"
    proc = deploycmp("run", "--model", decoder_dir(tmp_path, "Qwen2"), "--formats", "transformers,ort-genai,executorch-llm",
                     "--quantize", "none,int4", *SHAPES, "--out", out, *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = rows_by_id(out)
    assert {(r["format"], r["quantization"], r["status"]) for r in rows.values()} == {
        (f, q, "ok") for f in ("transformers", "ort-genai") for q in ("none", "int4")} | {
        ("executorch-llm", "none", "ok"), ("executorch-llm", "int4", "unavailable")}
    # Qwen2's q/k/v biases and tied embeddings went through ExecuTorch's conversion
    assert rows_by_id(out)["executorch-llm-none-executorch-server-cpu-b1-prompt16-new_tokens8"]["drift"]["kl_mean"] < 1e-9
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["task"] == "text-generation" and manifest["model"]["hf"]["architecture"] == "Qwen2ForCausalLM"


def test_prompts_and_shapes_refused_in_one_line(tmp_path):
    model = decoder_dir(tmp_path, "Llama")
    for args, words in ((["--shape", "prompt=250", "--shape", "new_tokens=16"], "needs 266 positions"),
                        (["--shape", "sequence=8"], "swept over prompt and new_tokens"),
                        (["--quantize", "int3"], "unknown quantization 'int3'"),
                        (["--data", str(tmp_path / "x.csv")], "prompts as .txt or .jsonl")):
        proc = deploycmp("export", "--model", model, "--task", "text-generation", *args, "--out", tmp_path / "o")
        assert proc.returncode == 2 and words in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)


def test_prompt_ids_repeat_the_text_to_the_length_asked():
    from deploycmp.sources import prompts

    tok = tokenizer()
    ids = prompts.ids_of(tok, "def f(x): return x", 40, "prompt")
    assert len(ids) == 40 and ids[:len(tok("def f(x): return x")["input_ids"])] == tok("def f(x): return x")["input_ids"]
    zen, docs = prompts.builtin_text()
    assert "Beautiful is better than ugly." in zen and "JSON" in docs
