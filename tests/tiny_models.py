"""Tiny PyTorch models for the tests: `--model tests.tiny_models:NAME` from the repository root."""
import os
import signal
import time

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv, BN, ReLU, pool, linear: 10 classes from 3x16x16 inputs."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def tiny_cnn():
    torch.manual_seed(0)
    return TinyCNN()


class Misbehaving(TinyCNN):
    """Crashes, hangs or raises when called eagerly with DEPLOYCMP_TEST_MISBEHAVE set (traced/exported graphs don't);
    with 'segfault-trace' it crashes while torch.jit traces it, i.e. inside the TorchScript converter, and with
    'unavailable-trace' the converter raises deploycmp.core.errors.Unavailable there."""

    def forward(self, x):
        how = os.environ.get("DEPLOYCMP_TEST_MISBEHAVE")
        if how == "segfault-trace" and torch.jit.is_tracing():
            os.kill(os.getpid(), signal.SIGSEGV)
        if how == "unavailable-trace" and torch.jit.is_tracing():  # a converter finding out it cannot run here
            from deploycmp.core.errors import Unavailable

            raise Unavailable("tracing needs hardware this machine lacks (a test's pretence)")
        if how == "segfault" and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            os.kill(os.getpid(), signal.SIGSEGV)
        if how == "hang" and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            time.sleep(3600)
        if how == "raise" and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            raise RuntimeError("misbehaving on purpose")
        if how == "native-error" and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            # what a native library writes before its Python binding raises a vaguer error (ExecuTorch + XNNPACK)
            os.write(2, b"E1126 10:00:00.000000 4242 XNNCompiler.cpp:412] Failed to create StaticConstantPad node 178 "
                        b"with code: xnn_status_invalid_parameter\n")
            raise RuntimeError("Failed to load method forward, error: 0x:1")
        return super().forward(x)


def misbehaving():
    torch.manual_seed(0)
    return Misbehaving()


def not_a_module():
    return "not a model"


def digits(layout: str = "NCHW"):
    """scikit-learn's 1,797 labeled handwritten digits as 8x8 RGB floats in [0, 1]."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.repeat((d.images / 16.0)[:, None], 3, axis=1).astype(np.float32)
    return (x if layout == "NCHW" else x.transpose(0, 2, 3, 1).copy()), d.target


def train_tiny_cnn(path, epochs: int = 10) -> float:
    """Train TinyCNN on the digits for a few seconds, save its state_dict to `path`; returns train accuracy."""
    torch.set_num_threads(1)
    x, y = digits()
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = tiny_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    torch.save(model.state_dict(), path)
    return accuracy


class IdsAndFeatures(nn.Module):
    """forward(ids, feats): int64 token ids [batch, 16] in [0, 1000) and a float feature vector [batch, 8] -> 5 logits."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(1000, 16)
        self.proj = nn.Linear(8, 16)
        self.head = nn.Linear(32, 5)

    def forward(self, ids, feats):
        return self.head(torch.cat([self.emb(ids).mean(1), torch.relu(self.proj(feats))], 1))


def ids_and_features():
    torch.manual_seed(0)
    return IdsAndFeatures()


class FeaturesFirst(IdsAndFeatures):
    """The same model with its arguments the other way round: forward(feats, ids)."""

    def forward(self, feats, ids):
        return super().forward(ids, feats)


def features_first():
    torch.manual_seed(0)
    return FeaturesFirst()


class TinyEncoder(nn.Module):
    """forward(ids): token + position embeddings, one self-attention block -> hidden states [batch, sequence, 16]."""

    def __init__(self, vocab: int = 1000, width: int = 16, max_len: int = 128):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(max_len, width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids):
        h = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))[None]
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        return self.norm(h + self.out(attn @ v))


def tiny_encoder():
    torch.manual_seed(0)
    return TinyEncoder()


class MaskedEncoder(TinyEncoder):
    """forward(ids, attention_mask): padded positions (mask 0) are not attended to."""

    def forward(self, ids, attention_mask):
        h = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))[None]
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        scores = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5
        scores = scores.masked_fill(attention_mask[:, None, :] == 0, -1e4)
        return self.norm(h + self.out(torch.softmax(scores, dim=-1) @ v))


def masked_encoder():
    torch.manual_seed(0)
    return MaskedEncoder()


class OptionalMask(nn.Module):
    """forward(mask=None, ids=None): the inputs are not forward's leading arguments, as in many Hugging Face models."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(1000, 4)

    def forward(self, mask=None, ids=None):
        h = self.emb(ids)
        return (h if mask is None else h * mask[..., None]).sum(1)


def optional_mask():
    torch.manual_seed(0)
    return OptionalMask()


class Outlier(nn.Module):
    """Three convolutions and a linear head; the second convolution's first output channel is about 1000 everywhere,
    1000x the others, and nothing reads it (the third convolution's weights for it are zero), so that one tensor's
    per-tensor int8 scale, set by the outlier channel, crushes the channels that are read: the layer where int8
    error enters. The third convolution's output, made of the crushed channels alone, is where it shows (its
    whole-tensor SQNR falls most), not where it enters."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 10)
        with torch.no_grad():
            self.conv2.bias[0] = 1000.0
            self.conv3.weight[:, 0] = 0
            self.conv3.bias.zero_()

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.head(x.mean((2, 3)))


def outlier():
    torch.manual_seed(0)
    return Outlier()


def hangs():
    """A factory that never returns (it waits for a lock nobody releases), for the export timeout."""
    import threading

    lock = threading.Lock()
    lock.acquire()
    lock.acquire()  # blocks for ever, in C, where only a signal handler between bytecodes can reach it
    return tiny_cnn()


class RateScaled(nn.Module):
    """Takes a sample rate as a Python int, as silero-vad's TorchScript file does (forward(self, x, sr: int)), and a
    0-d tensor gain: features [batch, 8] -> 4 outputs that change with both."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 4)

    def forward(self, x, sr: int, gain: torch.Tensor):
        y = self.proj(x) * gain
        if sr == 16000:
            return y
        return y * (float(sr) / 16000.0)


def rate_scaled():
    torch.manual_seed(0)
    return RateScaled().eval()


def rate_scaled_file(path) -> str:
    """RateScaled scripted into a TorchScript file (its schema: forward(Tensor x, int sr, Tensor gain))."""
    torch.jit.script(rate_scaled()).save(str(path))
    return str(path)


class Gained(nn.Module):
    """A 0-d tensor argument: features [batch, 8] times a learned projection times `gain` (shape [])."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 4)

    def forward(self, x, gain):
        return self.proj(x) * gain


def gained():
    torch.manual_seed(0)
    return Gained().eval()
