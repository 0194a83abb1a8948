"""Is the int8 model safe to release? Fine-tune resnet18 on scikit-learn's digits, export it to every format and
quantization mode, measure real task accuracy on held-out digits, and gate the release on it.

    python -m examples.quantized_release_gate [--epochs 3] [--out runs/release-gate]   # from the repository root

Steps: (1) fine-tune torchvision resnet18 with a 10-class head (--num-classes 10) on the digits' training part,
on the CPU, at 32x32 pixels, preprocessed exactly as `--data digits` does (ImageNet mean/std); (2) `deploycmp run`
on the checkpoint with `--data digits` (the 500 held-out digits: calibration and evaluation parts); (3)
`deploycmp validate` with an accuracy threshold, whose exit status is what a CI job would look at.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

SHAPE = (1, 3, 32, 32)


def fine_tune(path: Path, epochs: int, seed: int = 0) -> float:
    """Train resnet18 (10 classes) on the digits' training part; save its state_dict; return held-out accuracy."""
    import torch
    import torchvision

    from deploycmp.sources.data import IMAGENET, digits

    torch.manual_seed(seed)
    x, y = (torch.from_numpy(a) for a in digits("train", SHAPE[1:], "NCHW", IMAGENET))
    model = torchvision.models.resnet18(num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * ((len(x) + 63) // 64))
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    xh, yh = (torch.from_numpy(a) for a in digits("held_out", SHAPE[1:], "NCHW", IMAGENET))
    with torch.inference_mode():
        accuracy = float((model(xh).argmax(1) == yh).float().mean())
    torch.save(model.state_dict(), path)
    return accuracy


def deploycmp(*args) -> int:
    print("$ deploycmp " + " ".join(map(str, args)), flush=True)
    return subprocess.run([sys.executable, "-m", "deploycmp.cli", *map(str, args)]).returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/release-gate"))
    parser.add_argument("--formats", default="onnx,tflite,executorch")
    parser.add_argument("--runtimes", help="only these runtimes (default: every runtime of those formats)")
    parser.add_argument("--max-accuracy-drop", type=float, default=2.0, help="percentage points")
    parser.add_argument("--quick", action="store_true", help="short timing runs (for tests)")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out.parent / f"{args.out.name}-resnet18-digits.pt"
    start = time.monotonic()
    accuracy = fine_tune(checkpoint, args.epochs)
    print(f"fine-tuned resnet18 on {SHAPE[2]}x{SHAPE[3]} digits in {time.monotonic() - start:.0f} s: "
          f"{accuracy * 100:.1f}% on the held-out digits", flush=True)
    timing = ["--min-runs", "10", "--min-time", "0.2", "--max-time", "0", "--warmup-runs", "2", "--warmup-time", "0"] if args.quick else []
    status = deploycmp("run", "--model", "resnet18", "--num-classes", "10", "--weights", checkpoint, "--input-shape",
                       ",".join(map(str, SHAPE)), "--data", "digits", "--samples", "400", "--calibration-samples", "100",
                       "--formats", args.formats, "--quantize", "none,dynamic,int8", "--out", args.out, "--force", *timing,
                       *(["--runtimes", args.runtimes] if args.runtimes else []))
    if status != 0:
        return status
    return deploycmp("validate", args.out, "--max-accuracy-drop", args.max_accuracy_drop, "--junit",
                     args.out / "validate.xml")


if __name__ == "__main__":
    sys.exit(main())
