"""batches.Staged: a first load's batches held on disk, and the rows another batch supersedes."""

import random

import polars as pl

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


def test_superseded_names_exactly_the_rows_a_whole_run_collapse_drops_and_frames_come_back_in_order():
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
