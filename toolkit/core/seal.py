"""Code a run directory names is run only when this machine's user named it.

A `package.module:factory` source is rebuilt in every worker that needs the source model (the eager and
torch.compile rows, ExecuTorch re-quantization): that imports and calls code. A run directory someone sends you could
name any module, so its name alone is no permission. Export seals the source it was given with a key kept on this
machine (an HMAC in the manifest); bench, repair and explain rebuild a factory source only when the seal holds or
the user gives the same --model again. The permission reaches workers as DEPLOYCMP_ALLOW_SOURCE, which the worker
checks before it imports anything.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from contextlib import contextmanager
from pathlib import Path

from deploycmp.core.errors import UsageError

ENV = "DEPLOYCMP_ALLOW_SOURCE"
CODE_KINDS = ("factory",)  # source kinds whose rebuilding runs code named in the manifest


def key_file() -> Path:
    """This user's sealing key: $DEPLOYCMP_KEY_FILE, else in $XDG_CONFIG_HOME (~/.config)/deploycmp."""
    if os.environ.get("DEPLOYCMP_KEY_FILE"):
        return Path(os.environ["DEPLOYCMP_KEY_FILE"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "deploycmp" / "source-key"


def _key(create: bool) -> bytes | None:
    path = key_file()
    try:
        return path.read_bytes()
    except OSError:
        if not create:
            return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
    except FileExistsError:
        pass  # another deploycmp made it first
    except OSError:
        return None  # a read-only home: nothing is sealed, bench asks for --model
    return path.read_bytes()


def _mac(key: bytes, record: dict) -> str:
    what = {k: record.get(k) for k in ("framework", "kind", "spec")}
    return hmac.new(key, json.dumps(what, sort_keys=True).encode(), hashlib.sha256).hexdigest()


def seal(record: dict) -> str | None:
    """The seal export writes into the manifest for a source it was given (None when no key can be kept)."""
    key = _key(create=True)
    return _mac(key, record) if key else None


def runs_code(record: dict) -> bool:
    return record.get("kind") in CODE_KINDS


def allowed_source(manifest: dict, given: str | None) -> str | None:
    """The factory spec the workers may import for this run directory, or None (none to import, or not allowed).
    `given`: the --model the user passed again (it must be the run's)."""
    record = manifest["model"]
    if not runs_code(record):
        return None
    if given is not None:
        if given != record["spec"]:
            raise UsageError(f"--model {given} is not this run's source model ({record['spec']})")
        return given
    key = _key(create=False)
    found = manifest.get("source_seal")
    if key and isinstance(found, str) and hmac.compare_digest(found, _mac(key, record)):
        return record["spec"]
    return None


def refusal(record: dict) -> str:
    """Why a row that needs the source model is not measured."""
    return (f"the source model is code the run directory names ({record['spec']}), and this machine's export did not "
            f"make it: deploycmp does not import it on that word; pass --model {record['spec']} to run it")


@contextmanager
def allowing(spec: str | None):
    """Workers started inside may import `spec` (None: none)."""
    before = os.environ.get(ENV)
    if spec is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = spec
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def check_allowed(spec: str) -> None:
    """In a worker, before importing a factory: its parent must have allowed exactly this one."""
    if os.environ.get(ENV) != spec:
        raise UsageError(f"not allowed to import {spec}: the run directory names it, the user did not "
                         f"(pass --model {spec})")
