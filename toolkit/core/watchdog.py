"""A time limit for work done in deploycmp's own process (building the user's model, its reference outputs), where no
worker's timeout applies: a factory that hangs ends with one line, as a hanging worker does."""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

from deploycmp.core.errors import DeployError

GRACE_S = 10.0  # after the limit, what code stuck in a native call (which no signal interrupts) still gets


class DeadlineExceeded(DeployError):
    exit_code = 1


@contextmanager
def deadline(seconds: float, what: str):
    """Raise DeadlineExceeded in this (main) thread after `seconds`; if the code is stuck where Python cannot
    interrupt it, end the process GRACE_S later with the same line (the kernel drops the run directory's lock)."""
    message = f"{what} took longer than --export-timeout {seconds:g} s (stopped): does the model hang?"
    main = threading.current_thread() is threading.main_thread()
    done = threading.Event()

    def alarm(signum, frame):
        raise DeadlineExceeded(message)

    def backstop():
        if not done.wait(seconds + (GRACE_S if main else 0.0)):
            sys.stderr.write(f"deploycmp: error: {message}\n")
            sys.stderr.flush()
            os._exit(1)

    before = signal.signal(signal.SIGALRM, alarm) if main else None
    if main:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    threading.Thread(target=backstop, daemon=True, name="deploycmp-deadline").start()
    try:
        yield
    finally:
        done.set()
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, before)
