"""Console output as lines: a small terminal model, and the records' encoding.

``Screen`` keeps, for one stream, the lines not yet recorded and a cursor, and
applies what a terminal applies to them: ``\\n``, ``\\r``, ``\\b`` and the cursor
and erase sequences progress bars use (CSI A, B, K). Any other ANSI sequence
(colours) is text. So a tqdm bar is recorded as its final state, not its frames.

Lines above the cursor are recorded at once, unless a cursor-up was seen in the
last ``settle`` seconds (nested bars redraw them): then once untouched that
long. A line still open (no newline yet) is recorded as a ``partial`` snapshot
once quiet for ``settle`` seconds, or while it keeps changing at intervals of a
tenth of its age (at least a second): a partial record is superseded by the
next record of the same stream.

Records travel in runs, ``(time, stream, [text, ...], partial)``: the lines of
one write share its time, so the common case costs no Python work per line,
and ``Batch`` encodes a run's lines with one ``orjson.dumps``.
"""

from __future__ import annotations

import re
from typing import Iterator

import orjson

from ._lines import Lines

MAX_LINE = 32_768  # characters; a longer line is recorded as several records
MAX_ROWS = 200  # lines kept redrawable under cursor movement
_CONTROL = re.compile(r"(\n|\r|\x08|\x1b\[[0-9;]*[ABK])")
_MOVE = re.compile(r"\x1b\[[0-9;]*[ABK]")


def _moves(text: str) -> bool:
    """Whether ``text`` moves the cursor other than forward (``in`` scans at memchr speed)."""
    return "\r" in text or "\x08" in text or ("\x1b[" in text and _MOVE.search(text) is not None)


class Screen:
    """One stream's lines not yet recorded, and its cursor."""

    def __init__(self, stream: str, settle: float) -> None:
        self.stream, self.settle = stream, settle
        self.rows, self.times = [""], [0.0]
        self.row = self.col = 0
        self.moved = -1e18  # last cursor-up: rows above the cursor may still be redrawn
        self.drawn = False  # rows were overwritten: their trailing blanks are leftovers
        self.dirty = False  # changed since the last record
        self.opened = self.snapped = 0.0

    def write(self, t: float, text: str, out: list) -> None:
        """Apply ``text`` written at ``t``; append the runs now done to ``out``."""
        rows = self.rows
        if self.row == 0 and len(rows) == 1 and not rows[0]:
            self.opened = self.snapped = t  # a new line opens: its age counts from here
        self.dirty = True
        if self.row == len(rows) - 1 and self.col == len(rows[-1]) and not _moves(text):
            parts = text.split("\n")  # the common case: text appended at the end
            if len(parts) > 1 and self.row == 0 and t - self.moved >= self.settle:
                parts[0] = rows[0] + parts[0]  # whole lines, recorded as they are
                if self.drawn:
                    parts[0] = parts[0].rstrip(" ")
                    self.drawn = False
                rows[0] = parts.pop()
                if len(text) > MAX_LINE and max(map(len, parts)) > MAX_LINE:
                    parts = [p[i:i + MAX_LINE] for p in parts for i in range(0, max(len(p), 1), MAX_LINE)]
                out.append((t, self.stream, parts, False))
            else:
                rows[-1] += parts[0]
                if len(parts) > 1:
                    rows.extend(parts[1:])
                    self.times.extend([t] * (len(parts) - 1))
                    self.row = len(rows) - 1
            self.times[-1] = t
            self.col = len(rows[-1])
        else:
            self.drawn = True
            for i, token in enumerate(_CONTROL.split(text)):  # odd places: the controls
                if i % 2:
                    self._control(t, token)
                elif token:
                    self._put(t, token)
        line = rows[self.row]
        while len(line) > MAX_LINE and self.row == len(rows) - 1:  # bounded memory; a record each
            rows[self.row:] = [line[:MAX_LINE], line[MAX_LINE:]]
            self.times.append(t)
            self.row += 1
            self.col = max(0, self.col - MAX_LINE)
            line = rows[self.row]
        self.flush(t, out, False)

    def _control(self, t: float, token: str) -> None:
        rows, c = self.rows, token[0]
        if c == "\n":
            self.row += 1
            self.col = 0
            if self.row == len(rows):
                rows.append("")
                self.times.append(t)
        elif c == "\r":
            self.col = 0
        elif c == "\b":
            self.col = max(0, self.col - 1)
        else:  # CSI n A (up), B (down), K (erase in line)
            n = int(token[2:-1].split(";")[0] or 0)
            if token[-1] == "A":
                self.row = max(0, self.row - max(n, 1))
                self.moved = t
            elif token[-1] == "B":
                self.row += max(n, 1)
                while self.row >= len(rows):
                    rows.append("")
                    self.times.append(t)
            else:
                line, col = rows[self.row], self.col  # 0: to the end, 1: from the start, 2: all
                rows[self.row] = (line[:col] if n == 0 else
                                  " " * min(col + 1, len(line)) + line[col + 1:] if n == 1 else "")
                self.times[self.row] = t

    def _put(self, t: float, text: str) -> None:
        line = self.rows[self.row]
        if self.col > len(line):
            line += " " * (self.col - len(line))
        end = self.col + len(text)
        self.rows[self.row] = line[: self.col] + text + line[end:]
        self.col = end
        self.times[self.row] = t

    def flush(self, now: float, out: list, final: bool) -> None:
        """Record the rows that are done; at ``final`` all of them, else a snapshot when due."""
        if self.row:
            if final or now - self.moved >= self.settle or len(self.rows) > MAX_ROWS:
                k = self.row
            else:
                k = 0
                while k < self.row and now - self.times[k] >= self.settle:
                    k += 1
            if k:
                for t, text in zip(self.times[:k], self.rows[:k]):
                    out.append((t, self.stream, [text.rstrip(" ") if self.drawn else text], False))
                del self.rows[:k], self.times[:k]
                self.row -= k
                self.opened = self.snapped = now
        rows = [r.rstrip(" ") for r in self.rows] if self.drawn else self.rows[:]
        while rows and not rows[-1].strip(" "):
            rows.pop()  # blank rows at the bottom: nothing the terminal shows yet
        if not rows:
            if self.row == 0 and len(self.rows) == 1 and not self.rows[0]:
                self.dirty = self.drawn = False
            return
        if final:
            for t, text in zip(self.times, rows):
                out.append((t, self.stream, [text], False))
            self.rows, self.times, self.row, self.col, self.dirty = [""], [0.0], 0, 0, False
        elif self.dirty:
            last = max(self.times)
            if now - last >= self.settle or now - self.snapped >= max(1.0, (now - self.opened) / 10):
                out.append((last, self.stream, ["\n".join(rows)], True))
                self.snapped, self.dirty = now, False


class Batch:
    """Console records for the writer. ``batch(first)`` is a ``build`` for
    ``SeriesFile.append``: the encoded lines (a record's index is its line
    number, not stored, as for metrics); ``records()`` the same as dicts."""

    __slots__ = ("runs", "count")

    def __init__(self, runs: list) -> None:
        self.runs = runs
        self.count = sum(len(run[2]) for run in runs)

    def __len__(self) -> int:
        return self.count

    def records(self) -> Iterator[dict]:
        for t, stream, texts, partial in self.runs:
            for text in texts:
                record = {"timestamp": t, "stream": stream, "text": text}
                if partial:
                    record["partial"] = True
                yield record

    def __call__(self, first: int) -> Lines:
        out = Lines(first)
        for t, stream, texts, partial in self.runs:
            head = b'{"timestamp":%b,"stream":"%b",%b"text":"' % (
                orjson.dumps(t), stream.encode(), b'"partial":true,' if partial else b"")
            glue = b'"}\n' + head
            encoded = _encode_texts(texts)
            i = 0
            while i < len(encoded):  # one join per chunk: a chunk ends where an index mark falls
                part = encoded[i:i + out.room()]
                out.add_chunk(head + glue.join(part) + b'"}\n', len(part))
                i += len(part)
        return out


def _encode_texts(texts: list[str]) -> list[bytes]:
    """Each text as the inside of a JSON string. Without a ``"`` in any text, every
    quote orjson writes is a delimiter, so one call and a split are exact."""
    if len(texts) > 1 and '"' not in "".join(texts):
        encoded = orjson.dumps(texts)[2:-2].split(b'","')
        if len(encoded) == len(texts):
            return encoded
    return [orjson.dumps(text)[1:-1] for text in texts]
