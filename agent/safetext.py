"""Bytes are data: how host text that is not UTF-8, or not printable, is written out.

Everything the capture reads from the host (argv, paths, comm, UNIX socket
paths, /proc cmdlines) is attacker-chosen bytes. The decoders keep those
bytes losslessly in a Python ``str`` with ``surrogateescape``: a byte that is
not part of valid UTF-8 becomes the lone surrogate U+DC80+byte. Such a
string has no UTF-8 form, so no JSON encoder (and no RFC 8785 canonical
form) takes it, and printing it can also carry newlines and terminal escape
sequences. This module is the one definition of what every output does
instead:

**JSON** (profile, snapshot, ``--events``, evidence, OCSF, SSE, ``tail``):
a text field that holds bytes that are not UTF-8 is written in *escape
form*, and the object that holds it names the field in its ``escaped``
list. In escape form ``\\\\`` stands for one backslash, ``\\xHH`` for the
byte HH (two lowercase hex digits), and every other character for itself.
Fields not named in ``escaped`` are plain text, byte for byte, so valid UTF-8
(the overwhelmingly common case) is never touched. A list of strings is
named once and all of its entries are in escape form. Example, for
``touch $'/tmp/x\\xff'``::

    {"path": "/tmp/x\\\\xff", ..., "escaped": ["path"]}

:func:`unescape` gives the original back (``restore_json`` undoes a whole
document), so the JSON is lossless and reversible. Control characters are
valid in JSON strings and are written as JSON escapes (``\\u001b``) by the
encoders; :func:`terminal_safe_json` additionally writes C1 controls, line
and paragraph separators and bidirectional overrides as ``\\uXXXX``, which
changes no JSON value but keeps a terminal showing the JSON from acting
on them.

**Text** (``--format text``, ``snapshot --text``, drift lines): one field,
one token, escaped the way ``ls -b`` does (:func:`escape_text`): ``\\\\``,
``\\ `` for a space, ``\\n`` ``\\t`` and the other C escapes, and every
other unprintable character or non-UTF-8 byte as a three-digit octal
escape (``\\377``). An argv is shell-quoted word by word
(:func:`shell_quote`, ``$'...'`` for a word that needs escapes), so a file
name cannot draw a fake line and an argument cannot pass as two. Text cut
by the capture is marked with the token :data:`CUT_MARK` after it.

What can go wrong: nothing raises for any ``str`` input; a surrogate outside
U+DC80..U+DCFF (which no byte decoding makes) is written as ``\\uXXXX`` in
escape form and as its surrogatepass bytes in octal in text.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

__all__ = [
    "CUT_MARK",
    "ESCAPED_KEY",
    "MORE_MARK",
    "decode_host",
    "escape",
    "escape_fields",
    "escape_json",
    "escape_text",
    "escaped_names",
    "has_raw_bytes",
    "json_bytes",
    "restore_json",
    "shell_join",
    "shell_quote",
    "terminal_safe_json",
    "text_field",
    "to_bytes",
    "unescape",
]

ESCAPED_KEY: Final = "escaped"
"""The key, in a JSON object, listing which of its fields are in escape form."""

CUT_MARK: Final = "[cut]"
"""Text output: follows, as its own token, a field the capture cut short.

Unforgeable: an escaped field never contains a raw space, and a
shell-quoted word with ``[`` in it is always quoted."""

MORE_MARK: Final = "[more]"
"""Text output: ends an argv that had more entries than were captured."""

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_ESCAPE_FORM: Final = re.compile(r"\\(?:\\|x([0-9a-f]{2})|u([0-9a-f]{4}))")
_C_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\v": "\\v",
    "\f": "\\f",
    "\r": "\\r",
    "\\": "\\\\",
}
# Characters a JSON string may hold raw that a terminal may act on, as UTF-8:
# C1 controls (U+009B is CSI), line/paragraph separators, bidi controls
# (U+200E/F, U+202A-E, U+2066-9, U+061C).
_TERMINAL_UNSAFE_BYTES: Final = re.compile(
    b"\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9\x8e\x8f\xaa-\xae]|\xe2\x81[\xa6-\xa9]|\xd8\x9c"
)


def decode_host(raw: bytes) -> str:
    """Bytes from the host as a ``str`` that keeps every byte (surrogateescape)."""
    return raw.decode("utf-8", "surrogateescape")


def to_bytes(text: str) -> bytes:
    """The host bytes a ``str`` from :func:`decode_host` stands for."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no byte decoding makes
        return text.encode("utf-8", "surrogatepass")


def has_raw_bytes(text: str) -> bool:
    """Does ``text`` hold bytes that are not UTF-8 (lone surrogates)?"""
    return _SURROGATE.search(text) is not None


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


_TO_ESCAPE: Final = re.compile("[\\\\\ud800-\udfff]")


def escape(text: str) -> str:
    """``text`` in escape form (always, whatever it holds). See the module docstring."""
    return _TO_ESCAPE.sub(_escape_char, text)


def escape_json(text: str) -> tuple[str, bool]:
    """``(text, False)`` if it is valid Unicode, else ``(escape form, True)``."""
    if _SURROGATE.search(text) is None:
        return text, False
    return escape(text), True


def _unescape_match(match: re.Match[str]) -> str:
    byte, code = match.group(1), match.group(2)
    if byte is not None:
        value = int(byte, 16)
        return chr(0xDC00 + value) if value >= 0x80 else chr(value)
    if code is not None:
        return chr(int(code, 16))
    return "\\"


def unescape(text: str) -> str:
    """The original of a field in escape form (lone surrogates back in place)."""
    return _ESCAPE_FORM.sub(_unescape_match, text)


def _escape_node(value: Any) -> Any:
    """A copy of a JSON-shaped value with every text field that holds raw
    bytes in escape form and named in its object's ``escaped`` list."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        escaped: list[str] = []
        for key, item in value.items():
            name = escape(key) if type(key) is str and has_raw_bytes(key) else key
            if type(item) is str:
                text, changed = escape_json(item)
                out[name] = text
                if changed:
                    escaped.append(name)
            elif type(item) in (list, tuple) and any(
                type(x) is str and has_raw_bytes(x) for x in item
            ):
                out[name] = [escape(x) if type(x) is str else _escape_node(x) for x in item]
                escaped.append(name)
            else:
                out[name] = _escape_node(item)
        if escaped:
            out[ESCAPED_KEY] = sorted(set(escaped) | set(value.get(ESCAPED_KEY) or ()))
        return out
    if isinstance(value, list | tuple):
        return [_escape_node(item) for item in value]
    if type(value) is str and has_raw_bytes(value):
        return escape(value)  # a bare string outside any object: no flag can name it
    return value


def restore_json(value: Any) -> Any:
    """Undo :func:`json_bytes`'s escaping in a decoded JSON value (``escaped``
    lists removed, their fields restored), for reading a document back."""
    if isinstance(value, dict):
        names = value.get(ESCAPED_KEY)
        marked = set(names) if isinstance(names, list) else set()
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == ESCAPED_KEY and marked:
                continue
            if key in marked and isinstance(item, str):
                out[key] = unescape(item)
            elif key in marked and isinstance(item, list):
                out[key] = [unescape(x) if isinstance(x, str) else restore_json(x) for x in item]
            else:
                out[key] = restore_json(item)
        return out
    if isinstance(value, list):
        return [restore_json(item) for item in value]
    return value


def escape_fields(value: Any) -> Any:
    """The escaped copy :func:`json_bytes` encodes, for callers that encode
    it themselves (the evidence mapper's canonical form)."""
    return _escape_node(value)


def json_bytes(
    value: Any,
    encode: Callable[[Any], bytes],
    to_builtins: Callable[[Any], Any],
) -> bytes:
    """Encode ``value`` for JSON output, whatever bytes its text holds.

    ``encode`` is tried first (valid text costs nothing extra); if the value
    holds raw bytes, it is turned into builtins (``to_builtins``), escaped
    (see the module docstring) and encoded again. The result is then made
    terminal-safe (:func:`terminal_safe_json`). Never for canonical
    (hashed) bytes: those keep RFC 8785's exact form.
    """
    try:
        data = encode(value)
    except UnicodeEncodeError:
        data = encode(_escape_node(to_builtins(value)))
    return terminal_safe_json(data)


def _u_escape(match: re.Match[bytes]) -> bytes:
    return b"\\u%04x" % ord(match.group().decode("utf-8"))


def terminal_safe_json(data: bytes) -> bytes:
    """``data`` (UTF-8 JSON) with C1 controls, U+2028/U+2029 and bidi
    controls written as ``\\uXXXX``: the same JSON value, but nothing a
    terminal acts on. Outside strings JSON has only ASCII, so this is safe
    on whole documents."""
    if _TERMINAL_UNSAFE_BYTES.search(data) is None:
        return data
    return _TERMINAL_UNSAFE_BYTES.sub(_u_escape, data)


def _octal(text: str) -> str:
    return "".join(f"\\{byte:03o}" for byte in to_bytes(text))


def _escape_text_char(char: str) -> str:
    escaped = _C_ESCAPES.get(char)
    if escaped is not None:
        return escaped
    if char == " ":
        return "\\ "
    if char.isprintable():
        return char
    return _octal(char)


def escape_text(text: str) -> str:
    """One field for a line of text, escaped as ``ls -b`` does: never a raw
    space, control character, terminal escape or non-UTF-8 byte."""
    if text.isprintable() and "\\" not in text and " " not in text:
        return text
    return "".join(_escape_text_char(char) for char in text)


def _ansi_c_char(char: str) -> str:
    if char == "'":
        return "\\'"
    escaped = _C_ESCAPES.get(char)
    if escaped is not None:
        return escaped
    if char.isprintable() or char == " ":
        return char
    return _octal(char)


def shell_quote(word: str) -> str:
    """``word`` as one shell word: bare if safe, ``'...'`` if printable,
    else bash's ``$'...'`` with C and octal escapes (pasting it into bash
    gives the original bytes back)."""
    if word.isprintable():
        return shlex.quote(word)
    return "$'" + "".join(_ansi_c_char(char) for char in word) + "'"


def shell_join(argv: Iterable[str], *, cut: Iterable[int] = (), more: bool = False) -> str:
    """An argv as a line of shell words; entries at the ``cut`` indexes are
    followed by :data:`CUT_MARK`, and :data:`MORE_MARK` ends an argv that
    had more entries than were captured."""
    cut_at = set(cut)
    words: list[str] = []
    for index, entry in enumerate(argv):
        words.append(shell_quote(entry))
        if index in cut_at:
            words.append(CUT_MARK)
    if more:
        words.append(MORE_MARK)
    return " ".join(words)


def text_field(text: str, *, cut: bool = False) -> str:
    """:func:`escape_text`, plus :data:`CUT_MARK` when the capture cut it."""
    escaped = escape_text(text)
    return f"{escaped} {CUT_MARK}" if cut else escaped


def escaped_names(value: Mapping[str, Any]) -> list[str]:
    """The ``escaped`` list of a decoded JSON object (empty if none)."""
    names = value.get(ESCAPED_KEY)
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
