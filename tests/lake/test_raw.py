"""lake.raw: raw copies written around the page cache (O_DIRECT where allowed), and read once."""

import errno
import hashlib
import os
import random
import threading

import pytest

from pipelines.components.resources import Storage
from pipelines.lake import raw

BLOCK = raw._BLOCK


def _chunks(data: bytes, sizes: list[int], as_view: bool) -> list[bytes | memoryview]:
    out, start = [], 0
    for size in sizes:
        piece = data[start : start + size]
        out.append(memoryview(bytearray(piece)) if as_view else piece)
        start += size
    if start < len(data):
        out.append(data[start:])
    return out


@pytest.mark.parametrize(
    "length",
    [0, 1, raw._ALIGN - 1, raw._ALIGN, raw._ALIGN + 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 4097],
)
def test_a_copy_holds_exactly_the_bytes_and_their_hash_at_every_alignment(tmp_path, length):
    rng = random.Random(length)
    data = rng.randbytes(length)
    sizes = [rng.choice([1, 100, raw._ALIGN, BLOCK // 3, BLOCK + 5]) for _ in range(6)]
    for as_view in (False, True):
        target = tmp_path / f"copy-{as_view}.part"
        digest = hashlib.sha256()
        raw._write_through(target, _chunks(data, sizes, as_view), digest)
        assert target.read_bytes() == data
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_an_existing_staging_file_is_never_overwritten(tmp_path):
    target = tmp_path / "taken.part"
    target.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        raw._write_through(target, [b"new"], hashlib.sha256())
    assert target.read_bytes() == b"someone else's"


def test_a_filesystem_without_direct_io_gets_the_same_copy_buffered(tmp_path, monkeypatch):
    """Refused at open (tmpfs on older kernels) or at the first write (some FUSE mounts): same bytes."""
    data = random.Random(1).randbytes(BLOCK + 12345)
    real_open, real_write = os.open, os.write
    refused: list[str] = []

    def open_without_direct(path, flags, *args):
        if raw._DIRECT and flags & raw._DIRECT:
            refused.append("open")
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_without_direct)
    raw._write_through(tmp_path / "a.part", [data], hashlib.sha256())
    assert (tmp_path / "a.part").read_bytes() == data
    monkeypatch.setattr(os, "open", real_open)

    def write_refusing_direct(fd, buffer):
        import fcntl

        if raw._DIRECT and fcntl.fcntl(fd, fcntl.F_GETFL) & raw._DIRECT:
            refused.append("write")
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, buffer)

    monkeypatch.setattr(os, "write", write_refusing_direct)
    raw._write_through(tmp_path / "b.part", [data], hashlib.sha256())
    assert (tmp_path / "b.part").read_bytes() == data
    if raw._DIRECT:
        assert refused == ["open", "write"]


@pytest.mark.parametrize("length", [10, BLOCK + 1])
def test_other_write_errors_are_raised_not_retried_and_leave_no_thread(tmp_path, monkeypatch, length):
    def disk_full(fd, buffer):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space left"):
        raw._write_through(tmp_path / "c.part", [b"x" * length], hashlib.sha256())
    assert not [t for t in threading.enumerate() if t.name.startswith("pipelines-hash")]


def test_landing_stages_through_the_direct_copy_and_leaves_no_staging_file(tmp_path):
    source, dest = Storage(str(tmp_path / "landing")), Storage(str(tmp_path / "lake"))
    data = random.Random(2).randbytes(BLOCK + 77)
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "a.csv").write_bytes(data)
    zone = raw.RawZone(dest, "events", "run1", "2026-12-06")
    [(path, info)] = raw.list_files(source, "*.csv")
    rel = zone.keep_file(source, path, info)
    assert dest.read_bytes(rel) == data
    assert hashlib.sha256(data).hexdigest()[:32] in rel
    assert not list((tmp_path / "lake").rglob("*.part"))


def test_read_once_gives_the_file_as_a_plain_read_and_drops_what_it_read(tmp_path, monkeypatch):
    data = random.Random(3).randbytes(3 * raw._DROP_AFTER + 5)
    (tmp_path / "f.csv").write_bytes(data)
    dropped: list[tuple[int, int]] = []
    monkeypatch.setattr(
        os, "posix_fadvise", lambda fd, offset, length, advice: dropped.append((offset, length))
    )
    storage = Storage(str(tmp_path))
    with raw.read_once(storage, "f.csv") as handle:
        head = handle.read(10)
        handle.seek(0)
        body = handle.read(2 * raw._DROP_AFTER)
        handle.seek(-1, 1)
        rest = handle.read()
    assert head == data[:10]
    assert body + rest[1:] == data
    # the small read keeps its pages; each large one drops exactly the range it read
    assert dropped == [
        (0, 2 * raw._DROP_AFTER),
        (2 * raw._DROP_AFTER - 1, len(data) - 2 * raw._DROP_AFTER + 1),
    ]
