"""The session every runtime adapter returns. Timing and metrics live in the harness, not here."""
from __future__ import annotations

from typing import Any

import numpy as np


class Session:
    """A loaded artifact. The harness times only run(prepared) on inputs already in the runtime's own format."""

    def info(self) -> dict:
        """What the runtime knows about itself: version, threads, device, providers."""
        return {}

    def prepare(self, x: np.ndarray) -> Any:
        """Turn a float32 numpy batch into the runtime's native input (not timed)."""
        return x

    def run(self, prepared: Any) -> Any:
        raise NotImplementedError

    def to_numpy(self, raw: Any) -> list[np.ndarray]:
        """The outputs of one run as float numpy arrays, samples first (not timed)."""
        raise NotImplementedError
