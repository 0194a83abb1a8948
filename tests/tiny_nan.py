"""Tiny PyTorch models for tests/test_bad_input_outputs.py: `--model tests.tiny_nan:NAME` from the repository root."""
import torch
from torch import nn


class NaNInTheMiddle(nn.Module):
    """A conv, then the log of a negative value (NaN on every element), then a linear head: its activations, and so
    its outputs, are NaN whatever the input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        y = torch.log(-torch.relu(self.conv(x)) - 1.0)  # log of a value <= -1: NaN
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def nan_in_the_middle():
    torch.manual_seed(0)
    return NaNInTheMiddle()


class InfInTheMiddle(NaNInTheMiddle):
    """As NaNInTheMiddle, with exp of a large value (inf) in the middle instead of NaN."""

    def forward(self, x):
        y = torch.exp(torch.relu(self.conv(x)) + 1000.0)  # exp(>= 1000): inf in float32
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


def inf_in_the_middle():
    torch.manual_seed(0)
    return InfInTheMiddle()
