"""Errors a user can cause end as one line and an exit status, never a traceback (unless --verbose)."""


class DeployError(Exception):
    """Something failed while doing what was asked: exit status 1."""

    exit_code = 1


class UsageError(DeployError):
    """The user asked for something that cannot be: unknown model, bad path, bad option value. Exit status 2."""

    exit_code = 2


class Unavailable(Exception):
    """Raised inside a worker when its row cannot be measured here (no GPU provider, ...): the row becomes
    'unavailable' with this reason instead of 'failed'."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached deploycmp. A BaseException, so that no `except Exception` on the way turns it into
    a failed row: it unwinds to the command line, killing the running worker on its way. Exit status 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum


def first_line(e: BaseException, limit: int | None = 200) -> str:
    """An error's first non-empty line (its type's name where it has no text), at most `limit` characters (None:
    all of it)."""
    text = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (text[0] if text else type(e).__name__)[:limit]
