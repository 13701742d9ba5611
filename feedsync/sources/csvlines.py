"""One physical line of a CSV body read as one row: decoding, comments, quotes.

A line the feed's encoding cannot read is still a row, its undecodable bytes
shown as U+FFFD; ``Lines.damaged`` says which of its fields held them, so that
the records decide what such a field costs (csvfeed).

Lines come a batch at a time (body.numbered). A batch of plain data lines (no
blank line, comment, undecodable byte, quote left open or csv error) is decoded
and split in one go; any other batch is read line by line, which says what
each odd line is. Both read every line alike (tests compare them).
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from feedsync.body import MAX_LINE, LineBatch, Raw
from feedsync.model import Invalid

if TYPE_CHECKING:
    from feedsync.sources.csvfeed import CsvOptions

PREVIEW = 200
BOM = "\ufeff"

# Bytes the encoding cannot read, as decoding with "surrogateescape" leaves them: lone
# surrogates, which no strictly decoded text holds.
_UNDECODED = re.compile("[\ud800-\udfff]")

Row = tuple[int, str, list[str], int]  # line number, text, fields, hash
# Codecs that decode a batch of lines joined by "\n" as they decode each line
# alone: "\n" is one byte no other character's bytes hold, and no state carries
# from one line to the next (as ISO-2022's shifts would).
WHOLE_BATCH_CODECS = frozenset({"utf-8", "ascii", "iso8859-1", "cp1252"})


class Lines:
    """A body's data lines parsed as rows, one physical line each, with the lines
    that cannot be rows (over MAX_LINE, malformed) as Invalid, in body order.

    A row read from a line with undecodable bytes has them as U+FFFD in its
    text and fields, and ``damaged`` says which fields held them until the row
    is taken (so it holds at most the rows buffered in a head).
    """

    def __init__(self, batches: Iterable[LineBatch], options: CsvOptions, feed: str) -> None:
        self.batches = batches
        self.comment = options.comment
        self.delimiter = options.delimiter
        self.encoding = options.encoding
        self.feed = feed
        self.current: tuple[int, str, int, bool] | Invalid | None = None
        self.last_comment: tuple[int, str] | None = None
        self.damaged: dict[int, frozenset[int]] = {}  # line number -> 0-based fields
        self.whole = codecs.lookup(options.encoding).name in WHOLE_BATCH_CODECS

    def rows(self) -> Iterator[Row | Invalid]:
        for numbers, raws, hashes in self.batches:
            texts = self._plain(numbers, raws) if self.whole else None
            at = 0
            if texts is not None:
                # Rows one at a time, not the batch's list: fewer objects alive at once.
                reader = csv.reader(texts, delimiter=self.delimiter, skipinitialspace=True)
                while True:
                    try:
                        fields = next(reader)
                    except (StopIteration, csv.Error):
                        break
                    if reader.line_num != at + 1:
                        break  # a quote left open took the next line: a row is one line
                    yield numbers[at], texts[at], fields, hashes[at]
                    at += 1
            if at < len(raws):
                # From the line the batch's reading could not take, line by line.
                rest = zip(numbers[at:], raws[at:], hashes[at:], strict=True)
                yield from self._lines(rest)

    def _plain(self, numbers: Sequence[int], raws: list[bytes]) -> list[str] | None:
        """A batch's texts decoded in one go, or None if it holds a line that
        is not plain data: over MAX_LINE, undecodable, blank or a comment."""
        if max(map(len, raws)) > MAX_LINE:
            return None
        joined = b"\n".join(raws)
        try:
            texts = joined.decode(self.encoding).split("\n")
        except UnicodeDecodeError:
            return None
        if b"\r" in joined:
            texts = [text.rstrip("\r") for text in texts]
        if numbers[0] == 1:
            texts[0] = texts[0].removeprefix(BOM)
        starts = {text[:1] for text in texts}
        # Only a line starting with blank space or the comment's first character
        # can be blank or a comment; "" is an empty line.
        if "" in starts or self.comment[:1] in starts or any(c.isspace() for c in starts):
            return None
        return texts

    def _lines(self, raws: Iterator[Raw]) -> Iterator[Row | Invalid]:
        # One reader for all lines: a reader per line costs twice the time.
        reader = csv.reader(self._texts(raws), delimiter=self.delimiter, skipinitialspace=True)
        while True:
            try:
                for fields in reader:
                    current, self.current = self.current, None
                    if isinstance(current, tuple):
                        number, text, hashed, undecoded = current
                        if undecoded:
                            yield self._damaged(number, text, fields, hashed)
                        else:
                            yield number, text, fields, hashed
                    elif current is not None:
                        yield current
                return
            except csv.Error:
                # A field over csv.field_size_limit(), or a lone CR inside the line.
                current, self.current = self.current, None
                if isinstance(current, tuple):
                    number, text, hashed, _undecoded = current
                    reason = "too_long" if len(text) > csv.field_size_limit() else "malformed"
                    yield Invalid(number, shown(text)[:PREVIEW], reason, hashed)

    def _damaged(self, number: int, text: str, fields: list[str], hashed: int) -> Row:
        bad = frozenset(at for at, field in enumerate(fields) if _UNDECODED.search(field))
        if bad:
            self.damaged[number] = bad
        return number, shown(text), [shown(field) for field in fields], hashed

    def _texts(self, raws: Iterator[Raw]) -> Iterator[str]:
        """Data lines for the csv reader; ``current`` says which line it is.

        An Invalid line is handed over as an empty line (an empty row), so that
        the reader returns at once and ``rows`` can pass the Invalid on.
        """
        comment = self.comment
        encoding = self.encoding
        for number, raw, hashed in raws:
            if len(raw) > MAX_LINE:
                self.current = Invalid(number, _preview(raw, encoding), "too_long", hashed)
                yield ""
                continue
            try:
                text = raw.decode(encoding).rstrip("\r")
                undecoded = False
            except UnicodeDecodeError:
                # Still a row: which of its fields hold the bad bytes decides.
                text = raw.decode(encoding, "surrogateescape").rstrip("\r")
                undecoded = True
            if number == 1:
                text = text.removeprefix(BOM)
            start = text.lstrip()
            if not start:
                continue
            if comment and start.startswith(comment):
                self._note_comment(number, shown(start) if undecoded else start)
                continue
            self.current = (number, text, hashed, undecoded)
            yield text
            while self.current is not None:
                # The line ended inside a quoted field and the reader asks for the
                # next line to continue it: close the quote, a row is one line.
                yield '"'

    def _note_comment(self, number: int, line: str) -> None:
        # Banner rules ("####", "#") are not candidates for a commented header.
        text = line[len(self.comment) :].strip()
        if text.strip(self.comment + " \t"):
            self.last_comment = (number, text)


def _preview(raw: bytes, encoding: str) -> str:
    return raw[: PREVIEW * 4].decode(encoding, "replace").rstrip("\r\n")[:PREVIEW]


def shown(text: str) -> str:
    """Text with its undecodable bytes as U+FFFD: what records, messages and logs may hold."""
    return _UNDECODED.sub("\ufffd", text)
