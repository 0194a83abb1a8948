"""Strings that came from elsewhere (rows merged from other machines, run directories copied in: any of their text
may be hostile) made harmless where deploycmp writes them: the terminal and Markdown (no escape sequences, no
control characters), CSV (no formulas), XML (only the characters XML 1.0 allows). Standard library only."""
from __future__ import annotations

import re

# ECMA-48 escape sequences, whole: CSI (ESC [ ... final), the string controls OSC, DCS, SOS, PM and APC up to their
# terminator (BEL or ST), other escapes (ESC, intermediates, final), and the same in their 8-bit (C1) forms. An
# unterminated string control loses only its introducer: what follows it is plain text once no ESC is left.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b[]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|\x1b[ -/]*[0-~]"
    r"|\x9b[0-?]*[ -/]*[@-~]"
    r"|[\x90\x98\x9d-\x9f][^\x07\x1b\x90\x98\x9c-\x9f]*(?:\x07|\x1b\\|\x9c)")
_BREAKS = re.compile(r"[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]+")  # line and field breaks: one space in a line
# C0 controls but tab and newline (line breaks are dealt with before), DEL, C1 controls, lone surrogates (which no
# UTF-8 file or terminal takes), and the bidirectional overrides and isolates that make a line read otherwise than
# it is stored
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def terminal(text) -> str:
    """One line for the terminal or a Markdown cell: escape sequences and control characters removed, line breaks
    and tabs as one space."""
    text = text if isinstance(text, str) else str(text)
    return _CONTROLS.sub("", _BREAKS.sub(" ", _ESCAPES.sub("", text)))


def document(text: str) -> str:
    """A whole document (report.md, the HTML page): as terminal(), but its newlines and tabs are kept."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text.replace("\r\n", "\n")))


def csv_cell(value):
    """A CSV cell that no spreadsheet runs as a formula (OWASP, CSV injection): a string starting with = + - @, tab or
    carriage return gets a leading single quote; numbers stay numbers; lone surrogates (no UTF-8 file takes them)
    become U+FFFD."""
    if not isinstance(value, str):
        return value
    value = re.sub("[\ud800-\udfff]", "\ufffd", value)
    return "'" + value if value.startswith(_FORMULA) else value


def xml_text(text) -> str:
    """Text or an attribute value for XML 1.0: the characters it does not allow (most C0 controls, lone surrogates,
    U+FFFE and U+FFFF) removed, so that any parser reads the file."""
    text = text if isinstance(text, str) else str(text)
    return _XML_INVALID.sub("", text)
