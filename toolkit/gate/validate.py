"""deploycmp validate: a pass/fail verdict per row against drift and accuracy thresholds, an exit status for CI,
and a JUnit XML report.

Thresholds come from a TOML policy file (see examples/thresholds.toml) and from command-line flags:

    [default]             # every row
    max_top1_drop = 1.0
    [quantization.int8]   # rows of one quantization mode
    max_accuracy_drop = 1.0
    [format.tflite]       # rows of one format
    min_cosine = 0.99
    [path."onnx-int8"]    # rows of one format-quantization pair
    max_accuracy_drop = 2.0

The most specific wins: default < quantization < format < path < flags.
"""
from __future__ import annotations

import math
import os
import tempfile
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

from deploycmp.core.degenerate import hides
from deploycmp.core.errors import UsageError
from deploycmp.core.rundir import write_atomic
from deploycmp.core.sanitize import terminal, xml_text
from deploycmp.exporters import EXPORTERS, QUANTIZATIONS as MODES, llm

FORMATS = (*EXPORTERS, "eager", *llm.FORMATS, *llm.NOT_YET)
QUANTIZATIONS = tuple(dict.fromkeys((*MODES, *llm.QUANTIZATIONS)))


@dataclass(frozen=True, kw_only=True)  # by name only: swapped positions would swap release thresholds
class Thresholds:
    max_top1_drop: float | None = None      # percentage points of samples whose top-1 differs from the source
    min_sqnr: float | None = None           # dB
    max_rel_l2: float | None = None
    max_accuracy_drop: float | None = None  # percentage points of task accuracy lost against the source
    min_cosine: float | None = None         # worst per-sample cosine similarity to the source outputs
    # a model that generates (measure.token_drift, teacher-forced against the fp32 reference)
    max_kl: float | None = None                   # mean KL divergence of the next-token distribution, nats
    max_perplexity_increase: float | None = None  # percent
    min_token_agreement: float | None = None      # percent of positions whose most likely next token is the same

    def any(self) -> bool:
        return any(getattr(self, k) is not None for k in KEYS)

    def over(self, base: Thresholds) -> Thresholds:
        """These thresholds, falling back to `base` for the ones not set here."""
        return replace(base, **{k: getattr(self, k) for k in KEYS if getattr(self, k) is not None})


KEYS = tuple(f.name for f in fields(Thresholds))


@dataclass(frozen=True)
class Policy:
    """Thresholds per row kind, as a thresholds file gives them."""
    default: Thresholds = Thresholds()
    quantization: dict[str, Thresholds] = field(default_factory=dict)
    format: dict[str, Thresholds] = field(default_factory=dict)
    path: dict[str, Thresholds] = field(default_factory=dict)  # "FORMAT-QUANTIZATION"


def resolve(row: dict, policy: Policy, flags: Thresholds = Thresholds()) -> Thresholds:
    """The thresholds that apply to one row: default < quantization < format < path < flags."""
    fmt, quant = row.get("format"), row.get("quantization")
    t = policy.default
    for layer in (policy.quantization.get(quant), policy.format.get(fmt), policy.path.get(f"{fmt}-{quant}"), flags):
        t = layer.over(t) if layer else t
    return t


class Verdict(NamedTuple):
    row: dict
    verdict: str        # 'pass' | 'fail' | 'skip'
    reasons: list[str]  # the thresholds a failing row broke, or why a row was skipped
    notes: list[str]    # thresholds that could not be checked on this row (no measurement), and why


def _top1_drop(d: dict) -> float | None:
    return None if d.get("top1_agreement") is None else (1 - d["top1_agreement"]) * 100


def _accuracy_drop(d: dict) -> float | None:
    return None if d.get("accuracy_delta_pp") is None else -d["accuracy_delta_pp"]


def _sqnr(d: dict) -> float:
    """None (not identical: an all-zero reference, or nothing measured) breaks min_sqnr, as NaN does. A model that
    generates: the SQNR of its next-token logits."""
    value = d.get("sqnr_db", d.get("logit_sqnr_db"))
    return math.nan if value is None else value


def _token_agreement(d: dict) -> float | None:
    return None if "kl_mean" not in d else d["top1_agreement"] * 100


NO_LOGITS = "no teacher-forced logits measured (not a model that generates, or its runtime exposes none)"


# threshold -> (its measurement on a row's drift, what is missing when that is None, the reason it is broken)
RULES = {
    "max_top1_drop": (_top1_drop, "no top-1 agreement measured (not a logits output)", "top-1 changed on {:.2f}% of samples > {:g}"),
    "max_accuracy_drop": (_accuracy_drop, "no accuracy measured (data without labels)",
                          "accuracy dropped {:.2f} pp > {:g} pp"),
    "min_sqnr": (_sqnr, None, "SQNR {:.1f} dB < {:g} dB"),
    "min_cosine": (lambda d: d.get("cosine_min"), "no cosine similarity measured", "cosine min {:.4f} < {:g}"),
    "max_rel_l2": (lambda d: d.get("rel_l2"), "no relative L2 measured", "rel L2 {:.3g} > {:g}"),
    "max_kl": (lambda d: d.get("kl_mean"), NO_LOGITS, "KL mean {:.3g} nats > {:g}"),
    "max_perplexity_increase": (lambda d: d.get("perplexity_change_pct"), NO_LOGITS, "perplexity {:+.2f}% > +{:g}%"),
    "min_token_agreement": (_token_agreement, NO_LOGITS, "same next token on {:.2f}% of positions < {:g}%"),
}


RULE_METRIC = {"max_top1_drop": "top1_agreement", "max_accuracy_drop": "accuracy", "min_sqnr": "sqnr_db",
               "min_cosine": "cosine_min", "max_rel_l2": "rel_l2", "max_kl": "kl_mean",
               "max_perplexity_increase": "perplexity_change_pct", "min_token_agreement": "top1_agreement"}


def _within(key: str, value: float, limit: float) -> bool:
    """max_* holds at or below its limit, min_* at or above; a NaN measurement holds neither."""
    return value <= limit if key.startswith("max_") else value >= limit


def check(row: dict, t: Thresholds, allow_degenerate: bool = False) -> Verdict:
    """The verdict for one row under thresholds `t`, every output of the model checked. Identical outputs pass
    every drift threshold. Reasons and notes are one line of plain text each (sanitize.terminal): a merged row's
    error or output names may hold any text."""
    if row["status"] == "unavailable":
        return Verdict(row, "skip", [terminal(f"unavailable: {row.get('error')}")], [])
    if row["status"] != "ok":
        return Verdict(row, "fail", [terminal(f"{row['status']}: {row.get('error')} (nothing to validate)")], [])
    broken, notes = [], []
    drift = row.get("drift") or {}
    outputs = drift.get("outputs") or {None: drift}  # every output of the model (schema 1 rows: the one)
    for name, d in outputs.items():
        where = f"output {name}: " if len(outputs) > 1 else ""
        found = d.get("degenerate")
        if found and (t.max_top1_drop is not None if found["scope"] == "top1" else t.any()):
            if not allow_degenerate:
                broken.append(f"{where}drift n/a: {found['reason']} (--allow-degenerate accepts it)")
                continue
            notes.append(f"{where}drift n/a: {found['reason']} (accepted: --allow-degenerate)")
        for key, (measure, missing, reason) in RULES.items():
            limit, value = getattr(t, key), measure(d)
            if limit is None or d.get("identical") or hides(d, RULE_METRIC[key]):
                continue
            if value is None:
                notes.append(f"{where}{key} not checked: {missing}")
            elif not _within(key, value, limit):
                broken.append(where + reason.format(value, limit))
    budget = row.get("memory_budget")
    if budget and not budget["within"]:  # a target's budget is a release criterion of its own
        broken.append(f"memory {budget['used_mb']:.0f} MB > {row['target']} budget {budget['limit_mb']:g} MB")
    if not t.any():
        notes.append("no threshold applies to this row")
    return Verdict(row, "fail" if broken else "pass", [terminal(b) for b in broken], [terminal(n) for n in notes])


def validate(rows: list[dict], policy: Policy, flags: Thresholds = Thresholds(),
             allow_degenerate: bool = False) -> tuple[list[Verdict], int]:
    """A verdict per row, and the exit status: 1 when any row fails, else 0. A row whose reference outputs are
    degenerate (drift n/a) fails unless allow_degenerate."""
    verdicts = [check(row, resolve(row, policy, flags), allow_degenerate) for row in rows]
    return verdicts, (1 if any(v.verdict == "fail" for v in verdicts) else 0)


def verdict_lines(verdicts: list[Verdict]) -> list[str]:
    """What validate prints: a line per row (its verdict, id and reasons), its notes, and the counts; plain text."""
    out = []
    for v in verdicts:
        out.append(terminal(f"{v.verdict.upper():4}  {v.row.get('id')}" + (f": {'; '.join(v.reasons)}" if v.reasons
                                                                             else "")))
        out += [f"      note: {terminal(note)}" for note in v.notes]
    counts = {k: sum(1 for v in verdicts if v.verdict == k) for k in ("pass", "fail", "skip")}
    return out + [f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"]


# --- thresholds file ---

def load_thresholds(path: Path) -> Policy:
    """The policy of a TOML thresholds file; UsageError (starting with the file path) for anything wrong in it."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read thresholds file: {getattr(e, 'strerror', None) or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: invalid TOML: {e}") from None
    unknown = sorted(set(data) - {"default", "quantization", "format", "path"})
    if unknown:
        raise UsageError(f"{path}: unknown table [{unknown[0]}]; tables: [default], [quantization.QUANT], "
                         f"[format.FORMAT], [path.\"FORMAT-QUANT\"]")
    policy = Policy(default=_thresholds(path, "default", data.get("default", {})),
                    quantization=_section(path, data, "quantization", _quantization_key),
                    format=_section(path, data, "format", _format_key),
                    path=_section(path, data, "path", _path_key))
    if not (policy.default.any() or any(t.any() for s in (policy.quantization, policy.format, policy.path)
                                        for t in s.values())):
        raise UsageError(f"{path}: give at least one threshold ({', '.join(KEYS)})")
    return policy


def _section(path: Path, data: dict, name: str, check_key) -> dict[str, Thresholds]:
    tables = data.get(name, {})
    if not isinstance(tables, dict):
        raise UsageError(f"{path}: {name} must be tables like [{name}.NAME], not a value")
    return {check_key(path, key): _thresholds(path, f"{name}.{key}", table) for key, table in tables.items()}


def _format_key(path: Path, key: str) -> str:
    if key not in FORMATS:
        raise UsageError(f"{path}: [format.{key}]: unknown format {key!r}; formats: {', '.join(FORMATS)}")
    return key


def _quantization_key(path: Path, key: str) -> str:
    if key not in QUANTIZATIONS:
        raise UsageError(f"{path}: [quantization.{key}]: unknown quantization {key!r}; "
                         f"quantizations: {', '.join(QUANTIZATIONS)}")
    return key


def _path_key(path: Path, key: str) -> str:
    fmt, _, quant = key.rpartition("-")
    if not fmt:
        raise UsageError(f"{path}: [path.\"{key}\"]: not of the form FORMAT-QUANT, e.g. \"onnx-int8\"")
    _format_key(path, fmt)
    _quantization_key(path, quant)
    return key


def _thresholds(path: Path, where: str, table) -> Thresholds:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: {where} must be a table [{where}], not a value")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise UsageError(f"{path}: [{where}]: unknown threshold {unknown[0]!r}; thresholds: {', '.join(KEYS)}")
    return Thresholds(**{key: _value(path, where, key, value) for key, value in table.items()})


def _value(path: Path, where: str, key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"{path}: [{where}] {key} must be a number, not {value!r}")
    if key.startswith("max_") and value < 0:
        raise UsageError(f"{path}: [{where}] {key} must be >= 0, not {value!r}")
    if key == "min_cosine" and not -1 <= value <= 1:
        raise UsageError(f"{path}: [{where}] min_cosine must be between -1 and 1, not {value!r}")
    if key == "min_token_agreement" and not 0 <= value <= 100:
        raise UsageError(f"{path}: [{where}] min_token_agreement must be a percentage (0 to 100), not {value!r}")
    return float(value)


# --- JUnit XML ---

def measured(row: dict) -> str:
    """The measurements validate judges, as one line."""
    d = row.get("drift") or {}
    parts = [("accuracy delta", d.get("accuracy_delta_pp"), "{:+.2f} pp"), ("SQNR", d.get("sqnr_db"), "{:.1f} dB"),
             ("cosine min", d.get("cosine_min"), "{:.4f}"), ("top-1 agreement", d.get("top1_agreement"), "{:.2%}"),
             ("rel L2", d.get("rel_l2"), "{:.3g}"), ("KL mean", d.get("kl_mean"), "{:.3g} nats"),
             ("perplexity change", d.get("perplexity_change_pct"), "{:+.2f}%")]
    text = ", ".join(f"{name} {fmt.format(v)}" for name, v, fmt in parts if v is not None)
    return ("identical outputs; " if d.get("identical") else "") + (text or "nothing measured")


def _xml(text) -> str:
    """One line of plain text that XML 1.0 allows (a row's id, format ... may hold any text)."""
    return xml_text(terminal(text))


def junit_xml(verdicts: list[Verdict], suite_name: str = "deploycmp.gate.validate") -> str:
    """One <testsuite>, one <testcase> per row: <failure> lists the broken thresholds, <skipped> says why. Every
    text is one that XML 1.0 allows: any parser reads the file, whatever the rows hold."""
    count = {v: sum(1 for x in verdicts if x.verdict == v) for v in ("fail", "skip")}
    suite = ET.Element("testsuite", name=_xml(suite_name), tests=str(len(verdicts)), failures=str(count["fail"]),
                       errors="0", skipped=str(count["skip"]))
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", name=_xml(v.row.get("id")),
                             classname=_xml(f"deploycmp.{v.row.get('format')}.{v.row.get('quantization')}"))
        reasons = [_xml(r) for r in v.reasons]
        if v.verdict != "pass":
            tag = "failure" if v.verdict == "fail" else "skipped"
            ET.SubElement(case, tag, message="; ".join(reasons)).text = "\n".join(reasons)
        ET.SubElement(case, "system-out").text = "\n".join(_xml(line) for line in [measured(v.row), *v.notes])
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def check_junit_path(path) -> Path:
    """The --junit path, if a file can be written there (before validating: the verdicts are not worth computing
    when their report cannot be kept); else UsageError, one line naming the problem. Folders missing on the way are
    fine (write_junit makes them) when the nearest one that exists is a folder that takes new files. Nothing is
    created or changed here."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--junit {path} is a directory: give the path of a file, e.g. {path / 'junit.xml'}")
    if path.exists() and not path.is_file():
        raise UsageError(f"--junit {path} exists and is not a regular file: give the path of a file to write")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"--junit {path}: {folder} is not a directory")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"--junit {path}: the file is not writable")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--junit {path}: cannot write into folder {folder} (permission denied)")
    try:  # what write_atomic does: a temporary file in the folder (os.access says yes to root, even in /proc)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise UsageError(f"--junit {path}: cannot write a file in {folder}: {e.strerror or e}") from e
    return path


def write_junit(path: Path, verdicts: list[Verdict], suite_name: str = "deploycmp.gate.validate") -> None:
    path = check_junit_path(path)
    try:
        write_atomic(path, junit_xml(verdicts, suite_name))
    except OSError as e:
        raise UsageError(f"--junit {path}: cannot write the JUnit XML: {e.strerror or e}") from e
