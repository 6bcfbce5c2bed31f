"""batches.Staged: a first load's batches held on disk, and the rows another batch supersedes; ReadAhead."""

import random
import threading
import time
import weakref

import polars as pl
import pytest

from pipelines.components import batches, cleaning


def _batch(rng: random.Random, first_seq: int) -> pl.DataFrame:
    rows = rng.randint(0, 50)
    frame = pl.DataFrame(
        {
            "k": [rng.randint(0, 30) for _ in range(rows)],
            "inc": [rng.choice([None, 1, 2]) for _ in range(rows)],
            "_seq": list(range(first_seq, first_seq + rows)),
            "v": [f"row {first_seq + i}" for i in range(rows)],
        },
        schema={"k": pl.Int64, "inc": pl.Int64, "_seq": pl.Int64, "v": pl.String},
    )
    return cleaning.collapse_duplicates(frame, ("k",), "inc")[0]  # as a cleaned batch is


def _all_collide(frame, key):
    return pl.Series("print", [7] * frame.height, pl.UInt32)


def _parity(frame, key):
    return (frame.get_column(key[0]) % 2).cast(pl.UInt32)


@pytest.mark.parametrize("fingerprint", [None, _all_collide, _parity], ids=["hash", "all-collide", "parity"])
def test_superseded_names_exactly_the_rows_a_whole_run_collapse_drops_and_frames_come_back_in_order(
    monkeypatch, fingerprint
):
    # Unequal keys that share a fingerprint are only candidates: the keys themselves decide.
    if fingerprint is not None:
        monkeypatch.setattr(batches.Staged, "_fingerprint", staticmethod(fingerprint))
    rng = random.Random(3)
    for _ in range(40):
        held, seq = [], 0
        with batches.Staged(["k"], "inc") as staged:
            for _ in range(rng.randint(1, 5)):
                frame = _batch(rng, seq)
                seq += 100
                staged.spill()
                staged.add(frame)
                held.append(frame)
            everything = pl.concat(held)
            kept, _ = cleaning.collapse_duplicates(everything, ("k",), "inc")
            expected = set(everything.get_column("_seq")) - set(kept.get_column("_seq"))
            assert set(staged.superseded().to_list()) == expected
            back = list(staged.frames())
            assert len(back) == len(held) and all(a.equals(b) for a, b in zip(back, held, strict=True))
            folder = staged._folder
        assert folder is None or not folder.exists()  # the spill folder is removed on exit


def _staged_threads() -> list[threading.Thread]:
    return [
        t for t in threading.enumerate() if t.name.startswith(("pipelines-staged", "pipelines-read-ahead"))
    ]


def test_a_failed_background_spill_is_raised_by_the_next_call_and_marks_the_batches_broken(monkeypatch):
    def fail(frame, path):
        raise OSError("disk full")

    monkeypatch.setattr(batches.Staged, "_write", staticmethod(fail))
    frame = _batch(random.Random(1), 0)
    with pytest.raises(OSError, match="disk full"), batches.Staged(["k"], "inc") as staged:
        staged.add(frame)
        staged.add(frame)  # the first batch is being spilled in the background
        staged.superseded()  # waits for that spill: its error surfaces here
    assert staged.broken
    # not called again after the spill: the error surfaces on exit instead of vanishing
    with pytest.raises(OSError, match="disk full"), batches.Staged(["k"], "inc") as staged:
        staged.add(frame)
        staged.spill()
    assert not _staged_threads()


def test_a_failed_read_back_is_raised_by_frames(monkeypatch):
    def fail(path):
        raise OSError("read error")

    monkeypatch.setattr(batches.Staged, "_read", staticmethod(fail))
    rng = random.Random(2)
    with batches.Staged(["k"], "inc") as staged:
        for seq in (0, 100, 200):
            staged.add(_batch(rng, seq))
        with pytest.raises(OSError, match="read error"):
            list(staged.frames())
    assert not _staged_threads()


def test_read_ahead_keeps_order_produces_one_item_ahead_and_raises_where_the_item_was():
    produced = []

    def items():
        for number in range(5):
            produced.append(number)
            if number == 3:
                raise ValueError("item 3 is unreadable")
            yield number

    seen = []
    with pytest.raises(ValueError, match="item 3"), batches.ReadAhead(items()) as ahead:
        for item in ahead:
            time.sleep(0.05)  # the next item is produced meanwhile, not two
            assert len(produced) <= item + 2
            seen.append(item)
    assert seen == [0, 1, 2]
    assert not _staged_threads()


def test_read_ahead_closes_its_items_when_the_caller_stops_early():
    closed = []

    def items():
        try:
            yield from range(10)
        finally:
            closed.append(True)

    with batches.ReadAhead(items()) as ahead:
        for item in ahead:
            if item == 2:
                break
    assert closed == [True] and not _staged_threads()


def test_read_ahead_keeps_no_reference_to_the_item_the_caller_holds():
    class Item:
        pass

    with batches.ReadAhead(Item() for _ in range(3)) as ahead:
        for item in ahead:
            ref = weakref.ref(item)
            del item  # as ingest drops a batch's raw bytes once it is cleaned
            assert ref() is None
