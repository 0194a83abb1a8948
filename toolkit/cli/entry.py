"""The deploycmp program: runs a command and turns what stops it (bad input, an interruption, a full disk, a bug)
into one line on stderr and an exit status; a traceback only with --verbose."""
from __future__ import annotations

import errno
import signal
import sys
import time
import traceback

import click

from deploycmp.cli.commands import cli
from deploycmp.cli.options import VERBOSE
from deploycmp.core import timeline
from deploycmp.core.errors import DeployError, Interrupted
from deploycmp.core.lock import new_command
from deploycmp.core.sanitize import terminal


def _on_signal(signum, frame):
    for sig in (signal.SIGINT, signal.SIGTERM):  # once: cleaning up must not be interrupted by a second Ctrl-C
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def _interrupted(e: Interrupted) -> str:
    """What an interruption kept and how to go on (and that it stopped the worker it came in, where it came in one)."""
    from deploycmp.core.isolation import stopped_a_worker
    from deploycmp.core.lock import held_run_dir

    text = f"deploycmp: interrupted by {signal.Signals(e.signum).name}"
    if stopped_a_worker(e):
        text += "; the worker it was running is stopped"
    run_dir = held_run_dir()
    if run_dir is None:
        return text
    artifacts = len([p for p in (run_dir / "artifacts").glob("*.json") if p.stem != "eager-none"])
    rows = len(list((run_dir / "results").glob("*.json")))
    return (f"{text}. {run_dir} keeps {artifacts} finished artifact(s) and {rows} measured row(s); run the same "
            f"command again, without --force, to go on from there")


def _disk_error(e: OSError) -> str | None:
    """One line for a file system that refuses a write (read-only, full, not permitted), else None."""
    if e.errno in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT):
        return f"cannot write {e.filename or 'a file'}: {e.strerror}"
    return None


def main(argv=None) -> None:
    VERBOSE["on"] = False  # each call reads its own --verbose (the CLI may be called in-process again)
    new_command()
    args, start = list(sys.argv[1:] if argv is None else argv), time.monotonic()
    try:
        _main(argv)
    finally:  # no prewarmed worker outlives its command (repair measures outside bench); with DEPLOYCMP_TIMELINE
        # set: how long the command took, exit status and all
        from deploycmp.core import prewarm

        prewarm.close_all()
        timeline.record("command", time.monotonic() - start, command=next((a for a in args if not a.startswith("-")), ""))


def _main(argv) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    try:
        status = cli.main(args=argv, prog_name="deploycmp", standalone_mode=False)
    except Interrupted as e:
        click.echo(_interrupted(e), err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("deploycmp: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("deploycmp: interrupted", err=True)
        sys.exit(130)
    except DeployError as e:
        if VERBOSE["on"]:
            traceback.print_exc()
        click.echo(f"deploycmp: error: {terminal(str(e))}", err=True)  # it may quote a received row's text
        sys.exit(e.exit_code)
    except Exception as e:  # a bug or an unforeseen failure: still one line unless --verbose
        if VERBOSE["on"]:
            traceback.print_exc()
        line = _disk_error(e) if isinstance(e, OSError) else None
        click.echo(f"deploycmp: error: {line}" if line else
                   f"deploycmp: unexpected error: {type(e).__name__}: {terminal(str(e))} (run with --verbose for the traceback)", err=True)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
