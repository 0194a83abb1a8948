"""deploycmp export for a language model that generates (--task text-generation): the source decoder saved with
its tokenizer (the fp32 transformers artifact), the reference every path is compared with (the token ids of each
prompt length and of the evaluation text, the fp32 model's greedy continuations and its next-token logits on the
evaluation text: RUN_DIR/reference.npz), and each stack's artifact exported from that directory in a worker."""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from deploycmp import SCHEMA, __version__
from deploycmp.core.cache import ExportCache, code_digest, digest
from deploycmp.core.environment import environment, versions
from deploycmp.core.errors import UsageError
from deploycmp.core.isolation import run_isolated
from deploycmp.core.rundir import MANIFEST, REFERENCE, describe_files, write_json
from deploycmp.core.specs import BATCH, split_list
from deploycmp.core.watchdog import deadline
from deploycmp.export.out_dir import identity, prepare_out
from deploycmp.exporters import llm
from deploycmp.runtimes import missing

PROMPT, NEW_TOKENS = "prompt", "new_tokens"
DEFAULT_SWEEPS = {PROMPT: [128], NEW_TOKENS: [32]}
EVALUATION_TOKENS = 256  # the teacher-forced text's length (fewer when the model has fewer positions)
SOURCE_ID = "transformers-none"


def parse_formats(spec: str) -> list[str]:
    names = [*llm.FORMATS, *llm.NOT_YET] if spec.strip() == "all" else split_list(spec, "--formats")
    known = [*llm.FORMATS, *llm.NOT_YET]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown format {unknown[0]!r} for a model that generates; formats: {', '.join(known)} or all")
    return names


def parse_quantize(spec: str) -> list[str]:
    names = list(llm.QUANTIZATIONS) if spec.strip() == "all" else split_list(spec, "--quantize")
    unknown = [n for n in names if n not in llm.QUANTIZATIONS]
    if unknown:
        raise UsageError(f"unknown quantization {unknown[0]!r} for a model that generates; modes: "
                         f"{', '.join(llm.QUANTIZATIONS)} or all")
    return names


def sweeps_of(opts) -> dict:
    """--shape prompt=...,new_tokens=... (the batch is 1: one request at a time)."""
    other = [d for d in opts.sweeps if d not in (BATCH, PROMPT, NEW_TOKENS)]
    if other:
        raise UsageError(f"--shape {other[0]}: a model that generates is swept over {PROMPT} and {NEW_TOKENS}")
    if opts.sweeps.get(BATCH, [1]) != [1]:
        raise UsageError("--batch: a model that generates is measured one request at a time (batch 1)")
    return {BATCH: [1], **DEFAULT_SWEEPS, **{k: v for k, v in opts.sweeps.items() if k != BATCH}}


def export_generation(opts, out: Path, force: bool, progress=None) -> dict:
    from deploycmp.sources import hf

    formats, modes = parse_formats(opts.formats), parse_quantize(opts.quantize)
    opts = replace(opts, sweeps=sweeps_of(opts), task=hf.GENERATION)
    out = Path(out)
    prepare_out(out, force, identity(opts))
    source_dir = out / "artifacts" / SOURCE_ID
    with deadline(opts.timeout, f"building --model {opts.model} (and its reference generations)"):
        record, warnings, reference = _source(opts, out, source_dir)
    source = {"id": SOURCE_ID, "path": SOURCE_ID, "format": "transformers", "quantization": "none", "status": "ok",
              "error": None, "main_file": f"artifacts/{SOURCE_ID}/config.json",
              "exporter": {"name": "source model (save_pretrained)", "weights": record["weights"]},
              "export_seconds": 0.0, **describe_files(out, source_dir)}
    write_json(out / "artifacts" / f"{SOURCE_ID}.json", source)
    fingerprint = digest({"weights": [f["sha256"] for f in source["files"]], "code": code_digest(),
                          "versions": versions()})
    cache = ExportCache(opts.cache)
    jobs = [(f, q) for f in formats for q in modes if (f, q) != ("transformers", "none")]
    made = [source]
    for i, (fmt, quant) in enumerate(jobs):
        if progress:
            progress(i, len(jobs), f"export {fmt} {quant}")
        made.append(_artifact(out, fmt, quant, opts, fingerprint, cache))
    if progress and jobs:
        progress(len(jobs), len(jobs), "done")
    warnings.extend(cache.warnings)
    manifest = {
        "schema": SCHEMA, "tool": {"name": "deploycmp", "version": __version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "model": record, "warnings": warnings,
        "data": reference["data"], "shapes": opts.sweeps, "generation": reference["entry"],
        "artifacts": made, "environment": environment(), "cache": str(cache.root) if cache.root else None,
        "reuse": {"run directory": 0, "cache": sum(a.get("reused") == "cache" for a in made)},
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _source(opts, out: Path, source_dir: Path) -> tuple[dict, list, dict]:
    """The source decoder built and saved to `source_dir` with its tokenizer; its manifest record, warnings and
    reference (written to RUN_DIR/reference.npz)."""
    import torch

    from deploycmp.runtimes.llm.transformers_llm import Session
    from deploycmp.sources import hf, prompts

    if opts.inputs:
        raise UsageError("--input: a model that generates takes token ids; give prompt lengths with --shape prompt=N")
    config = hf.load_config(opts.model)
    tokenizer = hf.load_tokenizer(opts.model)
    model, weights, warnings = hf.build_model(config, hf.GENERATION, opts.model, opts.weights, seed=0)
    if weights not in ("random", "random-raw", "pretrained"):
        raise UsageError("--weights FILE applies to models that do not generate; give a save_pretrained directory")
    if weights.startswith("random"):
        warnings.append(f"{opts.model} has random weights: its next-token distributions are nearly flat, so token "
                        "agreement and KL say little about a trained model")
    model = model.eval()
    shutil.rmtree(source_dir, ignore_errors=True)
    model.save_pretrained(source_dir)
    tokenizer.save_pretrained(source_dir)
    most = int(getattr(config, "max_position_embeddings", 0) or 0) or None
    longest = max(opts.sweeps[PROMPT]) + max(opts.sweeps[NEW_TOKENS])
    if most and longest > most:
        raise UsageError(f"--shape {PROMPT}={max(opts.sweeps[PROMPT])} with {NEW_TOKENS}={max(opts.sweeps[NEW_TOKENS])} "
                         f"needs {longest} positions; {opts.model} has {most}")
    prompt_text, eval_text = prompts.read_texts(opts.data)
    evaluation = prompts.ids_of(tokenizer, eval_text, min(EVALUATION_TOKENS, most or EVALUATION_TOKENS), "evaluation")
    torch.manual_seed(0)
    session = Session(model, torch.get_num_threads(), "none")
    arrays = {"evaluation_ids": np.asarray(evaluation, dtype=np.int64),
              "evaluation_logits": session.logits(evaluation)}
    for p in opts.sweeps[PROMPT]:
        ids = prompts.ids_of(tokenizer, prompt_text, p, "prompt")
        tokens = [session.prefill(ids, p + max(opts.sweeps[NEW_TOKENS]))]
        tokens += [session.step() for _ in range(max(opts.sweeps[NEW_TOKENS]) - 1)]
        arrays[f"prompt_{p}"] = np.asarray(ids, dtype=np.int64)
        arrays[f"greedy_{p}"] = np.asarray(tokens, dtype=np.int64)
    np.savez(out / REFERENCE, **arrays)
    from deploycmp.sources.data import feed_sha256

    params = sum(p.numel() for p in model.parameters())
    record = {"framework": "torch", "kind": "hf-hub" if opts.model.startswith("hf:") else "hf-dir", "spec": opts.model,
              "name": opts.model[3:] if opts.model.startswith("hf:") else Path(opts.model).resolve().name,
              "weights": weights, "task": hf.GENERATION,
              "hf": {"architecture": type(model).__name__, "model_type": config.model_type},
              "parameters": int(params), "layers": int(getattr(config, "num_hidden_layers", 0) or 0),
              "vocab_size": int(config.vocab_size), "max_positions": most,
              "inputs": [{"name": "input_ids", "dtype": "int64", "shape": [BATCH, PROMPT]}],
              "outputs": [{"name": "logits", "dtype": "float32", "shape": [BATCH, PROMPT, int(config.vocab_size)],
                           "kind": "logits"}]}
    data = {"kind": "built-in text (the Zen of Python; standard library docstrings)" if opts.data == "random"
            else f"text of {opts.data}", "samples": len(evaluation), "unit": "tokens"}
    entry = {"file": REFERENCE, "sha256": feed_sha256(arrays), "prompts": opts.sweeps[PROMPT],
             "new_tokens": opts.sweeps[NEW_TOKENS], "evaluation_tokens": len(evaluation),
             "reference": "transformers fp32, greedy, with its KV cache (DynamicCache)"}
    return record, warnings, {"data": data, "entry": entry}


def _artifact(out: Path, fmt: str, quant: str, opts, fingerprint: str, cache: ExportCache) -> dict:
    """One stack's artifact: unavailable with its reason, copied from the export cache, or exported in a worker."""
    artifact_id = f"{fmt}-{quant}"
    folder = Path("artifacts") / artifact_id
    entry = {"id": artifact_id, "path": artifact_id, "format": fmt, "quantization": quant, "status": "ok", "error": None}
    reason = llm.unsupported_reason(fmt, quant)
    if reason is None and (absent := missing(llm.requirements(fmt, quant))):
        reason = f"{fmt}: {', '.join(absent)} not installed ({llm.install_hint(fmt, absent)})"
    if reason:
        return {**entry, "status": "unavailable", "error": reason}
    key = digest({"fingerprint": fingerprint, "format": fmt, "quantization": quant})
    shutil.rmtree(out / folder, ignore_errors=True)
    if (cached := cache.fetch(key, out / folder)):
        entry.update({k: v for k, v in cached.items() if k not in ("id", "key", "files", "main_file")})
        return {**entry, "main_file": str(folder / cached["main_file"]), **describe_files(out, out / folder),
                "reused": "cache"}
    (out / folder).mkdir(parents=True)
    spec = {"source_dir": str(out / "artifacts" / SOURCE_ID), "folder": str(out / folder), "format": fmt,
            "quantization": quant, "threads": max(1, opts.threads)}
    log = out / "logs" / f"export-{artifact_id}.log"
    try:
        outcome = run_isolated("deploycmp.export.generation_worker", spec, opts.timeout, log)
    except BaseException:  # interrupted: no half-made artifact stays behind
        shutil.rmtree(out / folder, ignore_errors=True)
        raise
    if outcome.status != "ok":
        shutil.rmtree(out / folder, ignore_errors=True)
        if outcome.status == "unavailable":
            return {**entry, "status": "unavailable", "error": outcome.error}
        return {**entry, "status": "export_failed", "error": f"{outcome.status}: {outcome.error}",
                "diagnosis": outcome.diagnosis, "log": str(log.relative_to(out)), "export_seconds": round(outcome.seconds, 3)}
    details = outcome.result
    entry.update({k: v for k, v in details.items() if k != "main_file"}, export_seconds=round(outcome.seconds, 3))
    entry["main_file"] = str(folder / details["main_file"])
    entry.update(describe_files(out, out / folder))
    cache.store(key, out / folder, {**{k: v for k, v in entry.items() if k not in ("files", "size_bytes", "size_gzip_bytes")},
                                    "main_file": details["main_file"]},
                [{**f, "path": str(Path(f["path"]).relative_to(folder))} for f in entry["files"]])
    return entry
