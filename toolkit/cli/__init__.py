"""The deploycmp command line: options (the groups the commands share), steps (export, bench and report as the
commands run them), commands, listing (deploycmp list) and entry (main: one line and an exit status for whatever
stops a command)."""
from deploycmp.cli.entry import main

__all__ = ["main"]
