"""Which encoding a feed document is really in. Pure.

Feeds declare their encoding in three places that disagree in the wild: a byte-order mark,
the HTTP ``Content-Type`` charset and the XML declaration. Japanese sources add legacy
encodings (Shift_JIS, EUC-JP, ISO-2022-JP) and sometimes declare UTF-8 over Shift_JIS bytes.
:func:`decode_document` picks, in this order, the first that decodes the bytes *strictly*:

1. a BOM (UTF-8, UTF-16, UTF-32);
2. ISO-2022-JP when the bytes carry its escape sequences (they are 7-bit, so they also
   "decode" as UTF-8, into control characters);
3. the HTTP charset, then the XML declaration — except that a Western single-byte charset
   (ISO-8859-1, Windows-1252, ASCII), which decodes any bytes, yields to valid non-ASCII
   UTF-8 (the usual server default laid over a UTF-8 document);
4. UTF-8;
5. Shift_JIS (as Windows-31J, its superset) or EUC-JP, whichever reads as more Japanese;
6. Windows-1252, with replacement characters for the few bytes it lacks.

Anything but the first declared encoding is reported in ``note`` (kept as the feed's bozo).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Decoded", "decode_document", "http_charset", "xml_declared_encoding"]

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_XML_DECL = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_ISO_2022_JP_ESCAPES = (b"\x1b$B", b"\x1b$@", b"\x1b(J", b"\x1b(I")
_SINGLE_BYTE_WESTERN = frozenset({"iso8859_1", "cp1252", "ascii", "iso8859_15"})
# Declared names read as their supersets: Japanese sites declare Shift_JIS and use the
# Windows-31J extensions (①, Ⅱ, ㈱), which strict Shift_JIS refuses.
_SUPERSETS = {"shift_jis": "cp932", "iso8859_1": "cp1252"}


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    encoding: str  # as people write it: "UTF-8", "Shift_JIS", "EUC-JP", "ISO-2022-JP", …
    note: str | None = None  # why it is not what the document declared


def http_charset(headers: Mapping[str, str]) -> str | None:
    match = _CHARSET.search(headers.get("content-type", ""))
    return match.group(1) if match else None


def xml_declared_encoding(body: bytes) -> str | None:
    match = _XML_DECL.match(body[:512])
    return match.group(1).decode("ascii") if match else None


def decode_document(body: bytes, headers: Mapping[str, str] | None = None) -> Decoded:
    """Decode a feed document; see the module docstring for the order of evidence."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            try:
                return Decoded(body[len(bom):].decode(name), name.upper())
            except UnicodeDecodeError:
                break
    declared = [d for d in (http_charset(headers or {}), xml_declared_encoding(body)) if d]
    known = [c for c in (_codec(d) for d in declared) if c is not None]
    first = known[0] if known else None

    def note(found: str) -> str | None:
        if first is None or first == found:
            return None
        return f"declared {declared[0]} but the bytes are {_label(found)}"

    if any(escape in body for escape in _ISO_2022_JP_ESCAPES):
        text = _strict(body, "iso2022_jp")
        if text is not None:
            return Decoded(text, _label("iso2022_jp"), note("iso2022_jp"))
    utf8 = _strict(body, "utf-8")
    for codec in known:
        if codec in _SINGLE_BYTE_WESTERN and utf8 is not None and not body.isascii():
            continue
        text = utf8 if codec == "utf_8" else _strict(body, codec)
        if text is not None:
            return Decoded(text, _label(codec), None if codec == first else note(codec))
    if utf8 is not None:
        return Decoded(utf8, "UTF-8", note("utf_8"))
    japanese = [(t, c) for c in ("cp932", "euc_jp") if (t := _strict(body, c)) is not None]
    if japanese:
        text, codec = max(japanese, key=lambda tc: _japaneseness(tc[0]))
        return Decoded(text, _label(codec), note(codec))
    return Decoded(body.decode("cp1252", errors="replace"), "Windows-1252",
                   note("cp1252") or "no declared encoding fits; read as Windows-1252")


def _codec(name: str) -> str | None:
    try:
        codec = codecs.lookup(name).name.replace("-", "_")
    except LookupError:
        return None
    return _SUPERSETS.get(codec, codec)


def _strict(body: bytes, codec: str) -> str | None:
    try:
        return body.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _label(codec: str) -> str:
    return {"utf_8": "UTF-8", "cp932": "Shift_JIS", "euc_jp": "EUC-JP",
            "iso2022_jp": "ISO-2022-JP", "cp1252": "Windows-1252"}.get(codec, codec.upper())


def _japaneseness(text: str) -> int:
    """Hiragana, full-width katakana and common kanji score; half-width katakana and
    private-use characters (what EUC-JP bytes become when read as Shift_JIS) count against."""
    score = 0
    for ch in text:
        cp = ord(ch)
        if 0x3040 <= cp <= 0x30FF or 0x4E00 <= cp <= 0x9FFF or 0x3000 <= cp <= 0x303F:
            score += 1
        elif 0xFF61 <= cp <= 0xFF9F or 0xE000 <= cp <= 0xF8FF:
            score -= 1
    return score
