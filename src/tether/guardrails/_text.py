"""Text views the rule guards scan: folded for look-alikes, un-leeted, de-spaced, and decoded payloads.

Attackers hide instructions from keyword rules with homoglyphs (Cyrillic `о` for Latin `o`), invisible
characters between letters, leetspeak, letters spaced apart and base64/hex payloads. Each view undoes one
trick and keeps a map back to the original offsets, so a verdict can still point at the original text.

Everything here is linear in the input: no pattern has nested unbounded quantifiers, every decode is
capped, and ASCII text (the common case) takes a fast path that allocates one lowered copy.
"""
# ruff: noqa: RUF001, RUF002  (look-alike characters are this file's subject matter)

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterator
from itertools import chain, repeat
from urllib.parse import unquote

__all__ = ["View", "decoded_payloads", "excerpt", "fold", "hidden_characters", "variants"]

# zero-width, joiners, word joiner and invisible operators, BOM, soft hyphen, Mongolian vowel separator
_INVISIBLE = frozenset(
    "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e\u034f\u115f\u1160\u3164"
)
# bidi embeddings, overrides and isolates: they reorder what a reader sees against what a model reads
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_TAG_FIRST, _TAG_LAST = 0xE0000, 0xE007F  # Unicode tags: invisible ASCII ("ASCII smuggling")
_VARIATION = frozenset(chr(c) for c in range(0xFE00, 0xFE10))

# Letters that render like Latin ones (Cyrillic, Greek, Armenian, Latin extensions), folded after NFKC
# and lowercasing. Only the look-alikes that matter for English keywords are mapped.
_HOMOGLYPHS = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h", "ԁ": "d", "ԛ": "q",
        "ԝ": "w", "ӏ": "l", "ɡ": "g", "ɑ": "a", "ı": "i", "ȷ": "j", "ʏ": "y", "ᴀ": "a", "ʙ": "b", "ᴄ": "c",
        "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n",
        "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ᴢ": "z",
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
        "υ": "u", "χ": "x", "ω": "w", "ս": "u", "օ": "o", "ց": "g", "ք": "q", "ℓ": "l", "ⅰ": "i", "ⅼ": "l",
    }
)  # fmt: skip
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)
_LEET_HINT = re.compile(r"[a-z][0-9@$!]|[0-9@$!][a-z]")
_LEET_WORDS = re.compile(
    r"ignor|disregard|forget|instruct|previous|prior|system|prompt|password|secret|reveal|jailbr|rules|overrid|"
    r"bypass|restrict|filter|pretend|unrestrict|uncensor|assistant|admin|developer|mode"
)
# three or more single letters, each followed by the same kind of separator: "i g n o r e", "i.g.n.o.r.e"
_SPACED = re.compile(r"(?<![a-z0-9])[a-z](?:[ ._\-*/|+]{1,3}[a-z](?![a-z0-9])){3,}")
_SPACED_SEP = re.compile(r"[ ._\-*/|+]")
_B64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}|[A-Za-z0-9_\-]{24,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){12,}|(?:\\x[0-9a-fA-F]{2}){8,}|(?:%[0-9a-fA-F]{2}){8,}")
_B32 = re.compile(r"[A-Z2-7]{24,}={0,6}")
_A85 = re.compile(r"<~[!-u]{10,}~>")
_B85 = re.compile(r"[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{40,}")
_URLENC = re.compile(r"%[0-9a-fA-F]{2}")
_UESC = re.compile(r"\\u[0-9a-fA-F]{4}")
_ENCODINGS = ((_B64, "base64"), (_HEX, "hex"), (_B32, "base32"), (_A85, "ascii85"), (_B85, "base85"))
_MAX_PAYLOADS = 16
_MAX_PAYLOAD_CHARS = 8192


class View:
    """One way of reading the text.

    Attributes:
        text: the text as this view reads it (always lowercase).
        kind: `plain`, `leet`, `spaced` or `decoded`.
        origin: for `decoded` views, the span of the encoded payload in the original.
    """

    __slots__ = ("_index", "_original", "kind", "origin", "text")

    def __init__(
        self,
        text: str,
        kind: str,
        index: list[int] | None = None,
        origin: tuple[int, int] | None = None,
        *,
        original: str | None = None,
    ):
        self.text = text
        self.kind = kind
        self.origin = origin
        self._index = index
        # set when the offset map is computed only if a span must be mapped back (rare: only on a hit)
        self._original = original

    @property
    def index(self) -> list[int] | None:
        """For each character of `text`, its offset in the original; `None` when offsets are the same."""
        if self._index is None and self._original is not None:
            self._index = _fold_index(self._original)
            self._original = None
        return self._index

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map a span of this view back to the original text.

        Args:
            start: offset of the span's first character in `text`.
            end: offset one past its last character.

        Returns:
            The span in the original text (the whole payload for a decoded view).
        """
        if self.origin is not None:
            return self.origin
        index = self.index
        if index is None:
            return start, end
        if not index:
            return 0, 0
        last = len(index) - 1
        return index[min(start, last)], index[min(max(end - 1, 0), last)] + 1


def _fold_char(ch: str) -> str:
    code = ord(ch)
    if ch in _INVISIBLE or ch in _BIDI or ch in _VARIATION or _TAG_FIRST <= code <= _TAG_LAST:
        return ""
    if 0xE0100 <= code <= 0xE01EF:  # variation selectors supplement
        return ""
    return unicodedata.normalize("NFKC", ch).lower().translate(_HOMOGLYPHS)


class _FoldTable(dict[int, str]):
    """A `str.translate` table filled on first sight of each character, so folding runs at C speed."""

    def __missing__(self, code: int) -> str:
        out = _fold_char(chr(code))
        if len(self) < 65536:  # bounded: an attacker cycling through all of Unicode cannot grow it forever
            self[code] = out
        return out


_FOLD = _FoldTable()


def _fold_index(text: str) -> list[int]:
    # map() keeps the per-character work in C; only characters that fold to 0 or 2+ characters cost more
    lengths = list(map(len, map(_FOLD.__getitem__, map(ord, text))))
    if all(n == 1 for n in lengths):
        return list(range(len(text)))
    return list(chain.from_iterable(repeat(i, n) for i, n in enumerate(lengths)))


def fold(text: str) -> View:
    """NFKC, lowercase, homoglyphs folded to Latin and invisible characters dropped.

    Args:
        text: the original text.

    Returns:
        The `plain` view; its offset map is computed only when a span needs mapping back.
    """
    if text.isascii():
        # the fast path: ASCII has no look-alikes or invisible characters to fold
        return View(text.lower(), "plain")
    folded = text.translate(_FOLD)
    return View(folded, "plain", original=text)


_INVISIBLE_RE = re.compile("[" + "".join(sorted(_INVISIBLE)) + "]")
_BIDI_RE = re.compile("[" + "".join(sorted(_BIDI)) + "]")
_TAGS_RE = re.compile("[\U000e0020-\U000e007e]+")


def hidden_characters(text: str) -> tuple[int, int, str]:
    """Count invisible and bidi characters, and decode Unicode tag characters.

    Args:
        text: the original text.

    Returns:
        `(invisible_between_letters, bidi_controls, tag_payload)`. Zero-width joiners inside emoji are not
        counted: only invisible characters with a letter on both sides are.
    """
    if text.isascii():
        return 0, 0, ""
    invisible = 0
    last = len(text) - 1
    for m in _INVISIBLE_RE.finditer(text):
        i = m.start()
        if 0 < i < last and text[i - 1].isalpha() and text[i + 1].isalpha():
            invisible += 1
    bidi = len(_BIDI_RE.findall(text))
    tags = "".join(chr(ord(c) - _TAG_FIRST) for m in _TAGS_RE.finditer(text) for c in m.group())
    return invisible, bidi, tags


def _leet(view: View) -> View | None:
    # Most digits next to letters are not leetspeak ("mp3", "2nd", "h1"): build the view only when a mixed
    # token reads as one of the words the rules look for once un-leeted.
    if not _LEET_HINT.search(view.text):
        return None
    text = view.text.translate(_LEET)  # one character for one: offsets are unchanged
    # worth a view only if un-leeting produced words the rules look for that were not there before
    if len(_LEET_WORDS.findall(text)) <= len(_LEET_WORDS.findall(view.text)):
        return None
    return View(text, "leet", view._index, original=view._original)


def _despaced(view: View) -> View | None:
    runs = list(_SPACED.finditer(view.text))
    if not runs:
        return None
    index_of_view = view.index
    base = index_of_view if index_of_view is not None else range(len(view.text))
    parts: list[str] = []
    index: list[int] = []
    pos = 0
    for m in runs:
        parts.append(view.text[pos : m.start()])
        index.extend(base[pos : m.start()])
        for j in range(m.start(), m.end()):
            ch = view.text[j]
            if not _SPACED_SEP.fullmatch(ch):
                parts.append(ch)
                index.append(base[j])
        # the collapsed word still needs a boundary on its right ("i g n o r e all" -> "ignore all")
        parts.append(" ")
        index.append(base[m.end() - 1])
        pos = m.end()
    parts.append(view.text[pos:])
    index.extend(base[pos:])
    return View("".join(parts), "spaced", index)


def _printable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 8:
        return None
    good = sum(1 for c in text if c.isprintable() or c in "\n\r\t")
    letters = sum(1 for c in text if c.isalpha())
    # binary blobs (images, archives, hashes) decode to noise; text payloads are mostly letters and spaces
    return text if good >= 0.95 * len(text) and letters >= 0.5 * len(text) and " " in text else None


def decoded_payloads(text: str) -> Iterator[tuple[str, int, int, str]]:
    """Decode base64, hex, `\\x..` and `%..` runs that turn out to be readable text.

    Args:
        text: the original text.

    Yields:
        `(decoded_text, start, end, encoding)` for at most 16 payloads of at most 8 KB each.
    """
    found = 0
    # every encoded payload worth decoding is a run of 24+ non-space characters; most texts have none, and
    # str.split() finds that out at C speed before any payload regex runs
    if max(map(len, text.split()), default=0) >= 24:
        for item in _decode_runs(text):
            yield item
            found += 1
            if found >= _MAX_PAYLOADS:
                return
    # percent-encoding and \\uXXXX escapes interleave with plain letters, so the whole text is decoded once
    if "%" in text and len(_URLENC.findall(text, 0, _MAX_PAYLOAD_CHARS * 4)) >= 3:
        decoded = unquote(text[: _MAX_PAYLOAD_CHARS * 4])
        if decoded != text:
            yield decoded, 0, len(text), "percent"
    if "\\u" in text and len(_UESC.findall(text, 0, _MAX_PAYLOAD_CHARS * 4)) >= 4:
        decoded = _UESC.sub(lambda m: chr(int(m.group()[2:], 16)), text[: _MAX_PAYLOAD_CHARS * 4])
        yield decoded, 0, len(text), "unicode_escape"


def _decode_runs(text: str) -> Iterator[tuple[str, int, int, str]]:
    # the payload regexes run over the long tokens only, not over the whole text
    cursor = 0
    for token in text.split():
        start = text.find(token, cursor)
        cursor = start + len(token)
        if len(token) < 24:
            continue
        for pattern, kind in _ENCODINGS:
            for m in pattern.finditer(token):
                decoded = _decode(m.group()[:_MAX_PAYLOAD_CHARS], kind)
                if decoded is not None:
                    yield decoded, start + m.start(), start + m.end(), kind


def _decode(chunk: str, kind: str) -> str | None:
    try:
        if kind == "base64":
            alt = b"-_" if "-" in chunk or "_" in chunk else None
            raw = base64.b64decode(chunk + "=" * (-len(chunk) % 4), altchars=alt)
        elif kind == "hex":
            digits = chunk.replace("\\x", "").replace("%", "")
            raw = bytes.fromhex(digits[: len(digits) // 2 * 2])
        elif kind == "base32":
            raw = base64.b32decode(chunk + "=" * (-len(chunk) % 8))
        elif kind == "ascii85":
            raw = base64.a85decode(chunk, adobe=True)
        else:
            raw = base64.b85decode(chunk)
    except (binascii.Error, ValueError):
        return None
    return _printable(raw)


def variants(text: str, *, decode: bool = True) -> list[View]:
    """Every view of `text` a rule guard should scan.

    Args:
        text: the original text.
        decode: also decode base64/hex payloads (one level deep; a decoded payload is folded too).

    Returns:
        The plain view first, then the leet, spaced and decoded views that differ from it.
    """
    plain = fold(text)
    views = [plain]
    for make in (_leet, _despaced):
        v = make(plain)
        if v is not None:
            views.append(v)
    if decode:
        for decoded, start, end, _kind in decoded_payloads(text):
            views.append(View(fold(decoded).text, "decoded", None, (start, end)))
        _, _, tags = hidden_characters(text)
        if tags:
            views.append(View(tags.lower(), "decoded", None, (0, len(text))))
    return views


def excerpt(text: str, start: int, end: int, limit: int = 80) -> str:
    """The matched text, cut to `limit` characters, with control characters made visible."""
    piece = text[start:end]
    if len(piece) > limit:
        piece = piece[: limit - 1] + "…"
    return piece.encode("unicode_escape").decode("ascii") if not piece.isprintable() else piece
