"""Every registered exporter, runtime and source framework module declares what its contract names (the Protocols in
exporters/__init__.py, runtimes/base.py and toolkit/sources/base.py), with the declared types and call signatures."""
import importlib
import inspect
import types
import typing

import pytest

from deploycmp import exporters, runtimes, sources
from deploycmp.core.schema import FRAMEWORKS
from deploycmp.exporters import Exporter
from deploycmp.runtimes.base import OPTIONAL as RUNTIME_OPTIONAL, Runtime
from deploycmp.sources.base import OPTIONAL as SOURCE_OPTIONAL, Framework


def _protocol_methods(protocol) -> dict[str, inspect.Signature]:
    return {n: inspect.signature(f) for n, f in vars(protocol).items()
            if callable(f) and not n.startswith("_")}


def _types(protocol) -> dict[str, tuple[type, ...]]:
    """The declared members (UPPER_CASE) -> the types a value may have (`tuple[str, ...] | dict`: tuple, dict)."""
    hints = typing.get_type_hints(protocol)
    return {n: tuple(typing.get_origin(a) or a for a in (typing.get_args(t) if isinstance(t, types.UnionType) else (t,)))
            for n, t in hints.items() if n.isupper()}


def problems(module, protocol, optional: dict | None = None) -> list[str]:
    """What `module` lacks or declares otherwise than `protocol` (and its OPTIONAL members, when it has them)."""
    found = []
    for name, allowed in _types(protocol).items():
        value = getattr(module, name, None)
        if value is None:
            found.append(f"{name} missing")
        elif not isinstance(value, allowed):
            found.append(f"{name} is a {type(value).__name__}")
    for name, wanted in _protocol_methods(protocol).items():
        fn = getattr(module, name, None)
        if not callable(fn):
            found.append(f"{name}() missing")
            continue
        params = [p for p in wanted.parameters.values() if p.name != "self"]
        have = inspect.signature(fn).parameters
        for i, p in enumerate(params):
            if p.name == "options":  # bench --tune's settings: only for runtimes with something to tune
                continue
            given = list(have.values())
            if i >= len(given) or given[i].name != p.name:
                found.append(f"{name}() takes no {p.name!r} as argument {i + 1}")
            elif (p.default is inspect.Parameter.empty) != (given[i].default is inspect.Parameter.empty):
                found.append(f"{name}() argument {p.name!r}: default differs from the contract's")
    for name, default in (optional or {}).items():
        value = getattr(module, name, default)
        if default is not None and not isinstance(value, type(default)):
            found.append(f"{name} is a {type(value).__name__}, not a {type(default).__name__}")
    return found


@pytest.mark.parametrize("name", sorted(exporters.EXPORTERS))
def test_every_exporter_conforms(name):
    assert problems(exporters.get(name), Exporter, exporters.OPTIONAL) == []


@pytest.mark.parametrize("name", sorted(runtimes.RUNTIMES))
def test_every_runtime_conforms(name):
    module = runtimes.get(name)
    assert problems(module, Runtime, RUNTIME_OPTIONAL) == []
    tunes = getattr(module, "TUNE", None) or hasattr(module, "tune_space")
    assert ("options" in inspect.signature(module.load).parameters) == bool(tunes), \
        "load() takes options exactly when the runtime declares something bench --tune may change"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_source_framework_conforms(framework):
    assert problems(sources.get(framework), Framework, SOURCE_OPTIONAL) == []


def test_a_module_that_breaks_its_contract_is_found():
    class Broken:
        NAME = "broken"
        FORMATS = "onnx"  # a string, not a tuple
        DEVICES = ["cpu"]  # a list, not a tuple

        @staticmethod
        def load(artifact, threads):
            ...

    assert problems(Broken, Runtime, RUNTIME_OPTIONAL) == [
        "FORMATS is a str", "REQUIRES missing", "load() takes no 'run_dir' as argument 2",
        "load() takes no 'threads' as argument 3", "load() takes no 'device' as argument 4",
        "DEVICES is a list, not a tuple"]
    assert problems(importlib.import_module("deploycmp.sources.onnx"), Framework) == []
