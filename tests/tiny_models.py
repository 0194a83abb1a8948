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
    """Crashes or hangs when called eagerly with DEPLOYCMP_TEST_MISBEHAVE set (traced/exported graphs don't)."""

    def forward(self, x):
        how = os.environ.get("DEPLOYCMP_TEST_MISBEHAVE")
        if how == "segfault" and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            os.kill(os.getpid(), signal.SIGSEGV)
        if how == "hang" and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            time.sleep(3600)
        return super().forward(x)


def misbehaving():
    torch.manual_seed(0)
    return Misbehaving()


def not_a_module():
    return "not a model"
