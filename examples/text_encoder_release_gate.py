"""Is the int8 text encoder safe to release? Train a tiny BERT classifier on scikit-learn's handwritten digits read
as token sequences, export it to every format, fp32 and int8, at two sequence lengths, measure real task accuracy on
the held-out digits, and gate the release on it.

    python -m examples.text_encoder_release_gate [--epochs 20] [--out runs/text-encoder-gate]   # from the repo root

The data, in plain words: scikit-learn's 1,797 handwritten digits are 8x8 images with 17 grey levels (0 to 16).
Read row by row, each one is a labeled sequence of 64 tokens from a vocabulary of 17: real labeled data that needs no
network. It is not text, and the accuracy here is not that of a language task; it is what a transformer encoder
keeps of its own accuracy once exported and quantized. `--data digits` feeds a token-id model exactly these
sequences (token id = grey level + 1, so that 0 stays the padding id; attention mask 1 over the 64 tokens; padded
with id 0 under mask 0 to a longer sequence, the first tokens kept at a shorter one), from the 500 held-out digits.

Steps: (1) train a tiny BertForSequenceClassification (2 layers, hidden 64, 10 classes) from scratch on the 1,297
training digits, on the CPU, and save_pretrained it; (2) `deploycmp run` on that directory with `--data digits`
(100 held-out digits for calibration, 400 for evaluation) in every format and quantization mode, at sequence lengths
64 and 128; (3) `deploycmp validate` with an accuracy threshold, whose exit status is what a CI job would look at.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if not __package__:  # run as a file (python examples/text_encoder_release_gate.py): import from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.quantized_release_gate import deploycmp  # noqa: E402

FORMATS = "torchscript,torch-export,onnx,tflite,executorch"
# A tiny encoder: the digit tokens (ids 0 to 17), 2 layers, hidden 64; no attention dropout
ENCODER = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
               hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0, num_labels=10, pad_token_id=0)


def encoder(max_sequence: int, seed: int = 0):
    """A BertForSequenceClassification for the digit tokens, initialised so that it learns in a few seconds: the
    token embeddings ordered by grey level, the position embeddings encoding each token's row and column."""
    import torch
    import transformers

    from deploycmp.sources.data import DIGIT_TOKEN_OFFSET, DIGIT_VOCABULARY

    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=DIGIT_VOCABULARY, max_position_embeddings=max_sequence, **ENCODER,
                                     architectures=["BertForSequenceClassification"])
    model = transformers.BertForSequenceClassification(config)
    hidden = config.hidden_size
    with torch.no_grad():
        words = model.bert.embeddings.word_embeddings.weight
        grey = (torch.arange(DIGIT_VOCABULARY, dtype=torch.float32) - DIGIT_TOKEN_OFFSET).clamp(min=0) / 16
        direction = torch.randn(hidden)
        words.add_(grey[:, None] * direction[None, :] * (0.5 * math.sqrt(hidden) / direction.norm()))
        half, rows = hidden // 2, torch.arange(max_sequence) // 8
        freqs = math.pi * torch.arange(1, half // 2 + 1, dtype=torch.float32) / (half // 2)
        for offset, where in ((0, rows), (half, torch.arange(max_sequence) % 8)):  # row, then column
            angles = where[:, None].float() * freqs[None, :]
            model.bert.embeddings.position_embeddings.weight[:, offset:offset + half] = 0.2 * torch.stack(
                [angles.sin(), angles.cos()], -1).reshape(max_sequence, half)
    return model


def train(path: Path, epochs: int = 20, max_sequence: int = 128, seed: int = 0) -> float:
    """Train the tiny encoder on the digits' training part (64 tokens each); save_pretrained it into `path`; return
    its accuracy on the 500 held-out digits."""
    import torch
    import transformers

    from deploycmp.sources.data import digit_tokens

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # its operations are too small for a second thread to pay; on a busy machine it costs
    try:
        model = encoder(max_sequence, seed)
        ids, mask, labels = (torch.from_numpy(a) for a in digit_tokens("train"))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
        batches = math.ceil(len(ids) / 32)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * batches, pct_start=0.2)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(ids)).split(32):
                opt.zero_grad()
                logits = model(input_ids=ids[idx], attention_mask=mask[idx]).logits
                torch.nn.functional.cross_entropy(logits, labels[idx], label_smoothing=0.1).backward()
                opt.step()
                sched.step()
        model.eval()
        ids, mask, labels = (torch.from_numpy(a) for a in digit_tokens("held_out"))
        with torch.inference_mode():
            accuracy = float((model(input_ids=ids, attention_mask=mask).logits.argmax(1) == labels).float().mean())
    finally:
        torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bar
    model.save_pretrained(path)
    return accuracy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/text-encoder-gate"))
    parser.add_argument("--formats", default=FORMATS)
    parser.add_argument("--quantize", default="none,dynamic,int8")
    parser.add_argument("--sequence", default="64,128", help="sequence lengths to measure (--shape sequence=...)")
    parser.add_argument("--samples", type=int, default=400, help="held-out digits to evaluate on")
    parser.add_argument("--calibration-samples", type=int, default=100, help="held-out digits for int8 calibration")
    parser.add_argument("--max-accuracy-drop", type=float, default=1.0, help="percentage points")
    parser.add_argument("--quick", action="store_true", help="short timing runs (for tests)")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = args.out.parent / f"{args.out.name}-bert-digits"
    longest = max(int(s) for s in args.sequence.split(","))
    start = time.monotonic()
    accuracy = train(model_dir, args.epochs, max_sequence=longest)
    print(f"trained a tiny BERT classifier (2 layers, hidden 64) on the digits as 64-token sequences in "
          f"{time.monotonic() - start:.0f} s: {accuracy * 100:.1f}% on the 500 held-out digits", flush=True)
    timing = ["--min-runs", "10", "--min-time", "0.2", "--max-time", "0", "--warmup-runs", "2", "--warmup-time", "0"] if args.quick else []
    status = deploycmp("run", "--model", model_dir, "--task", "text-classification", "--data", "digits",
                       "--samples", args.samples, "--calibration-samples", args.calibration_samples,
                       "--formats", args.formats, "--quantize", args.quantize, "--shape", f"sequence={args.sequence}",
                       "--out", args.out, "--force", *timing)
    if status not in (0, 1):  # a usage error or an interruption: nothing to validate
        return status
    # 1: a row failed; validate still gives the verdict on every row (a failed row fails it)
    return deploycmp("validate", args.out, "--max-accuracy-drop", args.max_accuracy_drop, "--junit",
                     args.out / "validate.xml")


if __name__ == "__main__":
    sys.exit(main())
