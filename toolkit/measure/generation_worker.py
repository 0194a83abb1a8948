"""Worker process for one row of a model that generates: affinity first, then import, load, drift against the
reference (teacher-forced next-token logits on the evaluation text; the greedy continuation of the row's prompt),
then timed requests.

The timing boundary is the same for every runtime: a request starts with the prompt's token ids in hand and a
fresh cache (a new Generator, a new DynamicCache ...); time to first token (TTFT) ends when the first new token's id
is returned (prefill), each inter-token latency (ITL) is one more token id returned (decode step), greedy, a fixed
number of new tokens (no stop at an end-of-sequence token). Tokenizing and detokenizing are outside it."""
from __future__ import annotations

import os
import time
from pathlib import Path

from deploycmp.core.child import child_main
from deploycmp.core.worker_memory import own_memory_mb

BOUNDARY = ("request = prompt token ids in hand -> new_tokens greedy token ids out, fresh cache per request; "
            "TTFT = up to the first new token id (prefill), ITL = each further token id (decode step); tokenizer "
            "outside")


def one_request(session, ids: list[int], new_tokens: int) -> tuple[list[int], float, list[float], float]:
    """(token ids, TTFT s, the inter-token latencies s, end to end s) of one greedy request."""
    clock = time.perf_counter
    t0 = clock()
    tokens = [session.prefill(ids, len(ids) + new_tokens)]
    ttft, gaps = clock() - t0, []
    for _ in range(new_tokens - 1):
        t = clock()
        tokens.append(session.step())
        gaps.append(clock() - t)
    return tokens, ttft, gaps, clock() - t0


def timed_requests(session, ids: list[int], new_tokens: int, warmup: int, min_runs: int, min_time_s: float) -> dict:
    """Warm-up requests, then timed ones until both `min_runs` and `min_time_s` are reached."""
    import numpy as np

    from deploycmp.measure.latency import summarize

    for _ in range(warmup):
        one_request(session, ids, new_tokens)
    ttfts, gaps, e2e, decode_rates = [], [], [], []
    began = time.perf_counter()
    while len(ttfts) < min_runs or time.perf_counter() - began < min_time_s:
        _, ttft, itl, total = one_request(session, ids, new_tokens)
        ttfts.append(ttft)
        gaps.extend(itl)
        e2e.append(total)
        if itl:
            decode_rates.append(len(itl) / sum(itl))
    ttft_ms, e2e_ms = summarize(ttfts, 1)["latency_ms"], summarize(e2e, 1)["latency_ms"]
    out = {"requests": len(ttfts), "warmup_requests": warmup, "prompt_tokens": len(ids), "new_tokens": new_tokens,
           "ttft_ms": ttft_ms, "e2e_ms": e2e_ms, "prefill_tokens_per_s": len(ids) * 1e3 / ttft_ms["p50"],
           "decode_tokens_per_s": float(np.median(decode_rates)) if decode_rates else None, "what": BOUNDARY}
    if gaps:
        out["itl_ms"] = {k: v for k, v in summarize(gaps, 1)["latency_ms"].items() if k != "per_call"}
    return out


def drift_of(session, reference: dict, prompt: int, new_tokens: int) -> dict:
    """Teacher-forced token drift on the evaluation text, and the greedy continuation of the row's prompt against
    the reference's."""
    import numpy as np

    from deploycmp.measure.token_drift import first_divergence, token_drift

    ids = [int(i) for i in reference["evaluation_ids"]]
    tokens = one_request(session, [int(i) for i in reference[f"prompt_{prompt}"]], new_tokens)[0]
    expected = [int(t) for t in reference[f"greedy_{prompt}"][:new_tokens]]
    diverged = first_divergence(expected, tokens)
    greedy = {"tokens": len(tokens), "first_divergence": diverged,
              "agreement": float(np.mean(np.asarray(tokens) == np.asarray(expected))),
              "matched_prefix": len(tokens) if diverged is None else diverged}
    logits = session.logits(ids)
    if logits is None:
        return {"greedy": greedy, "missing": f"{type(session).__module__} exposes no logits: only greedy agreement"}
    ref = reference["evaluation_logits"]
    return {**token_drift(ref[:-1], logits[:-1], targets=np.asarray(ids[1:])), "greedy": greedy,
            "on": f"{len(ids)} tokens of the evaluation text, teacher-forced"}


def measure(spec: dict) -> dict:
    spawn_t = float(os.environ.get("DEPLOYCMP_SPAWN_T", time.monotonic()))
    import numpy as np

    from deploycmp.runtimes import llm

    rt = llm.get(spec["runtime"])
    for module in rt.REQUIRES:
        __import__(module)
    t_import = time.monotonic()
    rss_before_load = own_memory_mb("VmRSS")
    run_dir, artifact = Path(spec["run_dir"]), spec["artifact"]
    session = rt.load(run_dir / Path(artifact["main_file"]).parent, artifact, spec["threads"])
    t_load = time.monotonic()
    with np.load(run_dir / spec["reference"], allow_pickle=False) as f:
        reference = {k: f[k] for k in f.files}
    prompt, new_tokens = spec["prompt"], spec["new_tokens"]
    ids = [int(i) for i in reference[f"prompt_{prompt}"]]
    session.prefill(ids, prompt + new_tokens)
    t_first = time.monotonic()
    drift = drift_of(session, reference, prompt, new_tokens)
    t_drift = time.monotonic()
    generation = timed_requests(session, ids, new_tokens, spec["warmup_runs"], spec["min_runs"], spec["min_time_s"])
    # the row's latency is the decode step's (what paths are ranked by), its throughput decode tokens/s
    row = {"generation": generation, "drift": drift, "latency_ms": generation.get("itl_ms"),
           "latency_per_item_ms": (generation.get("itl_ms") or {}).get("p50"),
           "throughput_per_s": generation["decode_tokens_per_s"],
           "cold_start_ms": {"import": (t_import - spawn_t) * 1e3, "load": (t_load - t_import) * 1e3,
                             "first_token": (t_first - t_load) * 1e3, "total": (t_first - spawn_t) * 1e3},
           "peak_rss_mb": own_memory_mb("VmHWM"), "runtime_info": session.info(),
           "timing": {"what": f"latency_ms: decode inter-token latency; {BOUNDARY}", "phases_s": {"start_and_import": t_import - spawn_t, "load": t_load - t_import,
                                   "first_token": t_first - t_load, "drift": t_drift - t_first,
                                   "requests": time.monotonic() - t_drift}}}
    if row["peak_rss_mb"] is not None and rss_before_load is not None:
        row["model_memory_mb"] = row["peak_rss_mb"] - rss_before_load
    return row


def job(spec: dict) -> dict:
    os.sched_setaffinity(0, spec["cpus"])
    return measure(spec)


if __name__ == "__main__":
    child_main(job)
