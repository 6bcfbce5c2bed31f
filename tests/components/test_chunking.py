"""chunking.csv_chunks: record-aligned chunks that put every byte and line of the file back in place."""

import io
import random

import pytest

from pipelines.components import chunking
from pipelines.components.chunking import csv_chunks


def _csv(rng: random.Random, rows: int) -> bytes:
    lines = ["id,text\n"]
    for i in range(rows):
        text = rng.choice(["plain", '"quoted, with comma"', '"two\nlines"', '"a ""quote"""', ""])
        lines.append(f"{i},{text}\n")
    return "".join(lines).encode()


def _check(data: bytes, size: int, start: int = 0, first_line: int = 2) -> list:
    header = data[: data.index(b"\n") + 1]
    chunks = list(csv_chunks(io.BytesIO(data), size, start=start, first_line=first_line))
    assert chunks[0].start == max(start, len(header)) and chunks[-1].end == len(data)
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    line = first_line
    for number, chunk in enumerate(chunks):
        body = data[chunk.start : chunk.end]
        assert chunk.data == header + body  # one copy, nothing lost or repeated
        assert chunk.newlines == chunk.data.count(b"\n")  # handed on to the parser, which needs it
        assert chunk.first_line == line
        if body:  # (a header-only file's one chunk has no lines)
            assert chunk.last_line == line + body.count(b"\n") - 1
        assert data[: chunk.end].count(b'"') % 2 == 0  # cut outside a quoted field
        if number + 1 < len(chunks):
            assert chunks[number + 1].start == chunk.end
        line = chunk.last_line + 1
    return chunks


@pytest.mark.parametrize("count_step", [1, 3, 1 << 20])  # small steps: the vectorised counts run too
def test_chunks_cover_the_file_at_record_boundaries_and_resume_in_place(monkeypatch, count_step):
    monkeypatch.setattr(chunking, "_COUNT_STEP", count_step)
    rng = random.Random(7)
    for _ in range(30):
        data = _csv(rng, rng.randint(0, 40))
        for size in (1, 7, 30, 200, 10_000):  # smaller than a record, around one, many, all
            for chunk in _check(data, size)[:-1]:
                # resuming where a committed chunk ended covers the rest of the file the same way
                _check(data, size, start=chunk.end, first_line=chunk.last_line + 1)


def test_a_stray_quote_leaves_the_rest_of_the_file_as_one_last_chunk():
    data = b'id,text\n1,a\n2,"never closed\n3,b\n4,c\n'
    chunks = list(csv_chunks(io.BytesIO(data), 4))
    assert chunks[-1].last and chunks[-1].data.endswith(b'2,"never closed\n3,b\n4,c\n')
    assert b"".join(c.data[len(b"id,text\n") :] for c in chunks) == data[len(b"id,text\n") :]


def test_a_header_only_file_is_one_empty_chunk():
    (chunk,) = csv_chunks(io.BytesIO(b"id,text\n"), 16)
    assert (chunk.data, chunk.last, chunk.start, chunk.end) == (b"id,text\n", True, 8, 8)
