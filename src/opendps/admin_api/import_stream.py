"""Split a streamed import body into one JSON text per enrollment, without holding the body.

Sans-I/O: `feed(bytes)` returns the items completed so far, `finish()` the rest. Two forms are
accepted and told apart by the first non-blank byte: a JSON array (`[`) or JSON lines (one
object per line, NDJSON). Structural bytes of JSON are ASCII and never occur inside a UTF-8
multi-byte sequence, so the scan works on raw bytes and chunk boundaries may fall anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BLANK = b" \t\r\n"
# Outside strings only these bytes change the structure; inside strings only quote and escape.
_STRUCTURAL = re.compile(rb'["\[\]{},]')
_STRING_END_OR_ESCAPE = re.compile(rb'["\\]')


@dataclass(frozen=True, slots=True)
class ImportItem:
    """One enrollment's JSON text, or `None` when it was longer than the per-item limit."""

    number: int  # 1-based line number (JSON lines) or element number (JSON array)
    text: bytes | None


class MalformedImport(Exception):
    """The body's structure is broken (not its items): nothing after this point can be read."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(reason)
        self.number = number
        self.reason = reason


class ImportSplitter:
    """Feed the body in chunks of any size; get complete items back as they close."""

    def __init__(self, max_item_bytes: int) -> None:
        self._max = max_item_bytes
        self._form: _JsonLines | _JsonArray | None = None
        self._pending = bytearray()  # leading blanks before the form is known

    def feed(self, data: bytes) -> list[ImportItem]:
        if self._form is None:
            self._pending += data
            stripped = bytes(self._pending).lstrip(_BLANK)
            if not stripped:
                return []
            self._pending.clear()
            if stripped[:1] == b"[":
                self._form, data = _JsonArray(self._max), stripped[1:]
            else:
                self._form, data = _JsonLines(self._max), stripped
        return self._form.feed(data)

    def finish(self) -> list[ImportItem]:
        """The last items; raises MalformedImport if the body ended inside the structure."""
        return self._form.finish() if self._form is not None else []


class _JsonLines:
    def __init__(self, max_item_bytes: int) -> None:
        self._max = max_item_bytes
        self._line = bytearray()
        self._number = 0
        self._oversized = False

    def feed(self, data: bytes) -> list[ImportItem]:
        items: list[ImportItem] = []
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            self._add(data[start:end])
            self._close_line(items)
            start = end + 1
        self._add(data[start:])
        return items

    def finish(self) -> list[ImportItem]:
        items: list[ImportItem] = []
        if self._line.strip(_BLANK) or self._oversized:
            self._close_line(items)
        return items

    def _add(self, part: bytes) -> None:
        if self._oversized:
            return
        if len(self._line) + len(part) > self._max:
            self._oversized = True
            self._line.clear()
        else:
            self._line += part

    def _close_line(self, items: list[ImportItem]) -> None:
        self._number += 1
        text = bytes(self._line).strip(_BLANK)
        if self._oversized:
            items.append(ImportItem(self._number, None))
        elif text:
            items.append(ImportItem(self._number, text))
        self._line.clear()
        self._oversized = False


class _JsonArray:
    """Top-level elements of one JSON array (fed from after its `[`); nesting depth is counted
    inside each element."""

    def __init__(self, max_item_bytes: int) -> None:
        self._max = max_item_bytes
        self._closed = False  # its `]` was seen
        self._depth = 0
        self._in_string = False
        self._escape_pending = False  # a backslash ended the previous chunk
        self._element = bytearray()
        self._oversized = False
        self._number = 0

    def feed(self, data: bytes) -> list[ImportItem]:
        items: list[ImportItem] = []
        position = 0
        if self._escape_pending and data:
            self._add(data[:1])
            self._escape_pending = False
            position = 1
        while position < len(data):
            if self._closed:
                self._refuse_trailing(data[position:])
                break
            if self._in_string:
                position = self._scan_string(data, position)
            else:
                position = self._scan(data, position, items)
        return items

    def finish(self) -> list[ImportItem]:
        if not self._closed:
            raise MalformedImport(self._number + 1, "the JSON array is not closed")
        return []

    def _scan_string(self, data: bytes, position: int) -> int:
        match = _STRING_END_OR_ESCAPE.search(data, position)
        if match is None:
            self._add(data[position:])
            return len(data)
        if match.group() == b"\\":
            end = match.end() + 1  # the escaped byte belongs to the string, whatever it is
            if end > len(data):
                self._escape_pending = True
            self._add(data[position:end])
            return min(end, len(data))
        self._in_string = False
        self._add(data[position : match.end()])
        return match.end()

    def _scan(self, data: bytes, position: int, items: list[ImportItem]) -> int:
        match = _STRUCTURAL.search(data, position)
        end = match.start() if match is not None else len(data)
        self._add(data[position:end])
        if match is None:
            return len(data)
        byte = match.group()
        if self._depth == 0 and byte in (b",", b"]"):
            self._close_element(items, last=byte == b"]")
            return match.end()
        if byte == b'"':
            self._in_string = True
        elif byte in (b"{", b"["):
            self._depth += 1
        elif byte in (b"}", b"]"):
            self._depth -= 1
            if self._depth < 0:
                raise MalformedImport(self._number + 1, "unbalanced brackets in the JSON array")
        self._add(byte)
        return match.end()

    def _close_element(self, items: list[ImportItem], *, last: bool) -> None:
        text = bytes(self._element).strip(_BLANK)
        if text or self._oversized:
            self._number += 1
            items.append(ImportItem(self._number, None if self._oversized else text))
        elif not (last and self._number == 0):
            # `[a,,b]` or `[a,]`: an empty element is a syntax error, not an empty enrollment.
            raise MalformedImport(self._number + 1, "an element of the JSON array is empty")
        self._element.clear()
        self._oversized = False
        self._closed = last

    def _refuse_trailing(self, rest: bytes) -> None:
        if rest.strip(_BLANK):
            raise MalformedImport(self._number + 1, "unexpected data after the JSON array")

    def _add(self, part: bytes) -> None:
        if self._oversized or not part:
            return
        if len(self._element) + len(part) > self._max:
            self._oversized = True
            self._element.clear()
        else:
            self._element += part
