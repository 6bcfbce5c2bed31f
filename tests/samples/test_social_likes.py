"""The social likes sample is deterministic and carries the mess it promises."""

import json
from collections import Counter

import pytest

from pipelines.components.resources import Storage
from pipelines.samples.social_likes import CRAFTED, generate, land_social_likes


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _likes(root):
    rows = []
    for path in sorted((root / "social_likes" / "likes").glob("*.ndjson")):
        rows += [(path.name, json.loads(line)) for line in path.read_text().splitlines()]
    return rows


def test_same_seed_same_bytes_and_windows_add_up(tmp_path):
    land_social_likes(Storage(str(tmp_path / "a")))
    land_social_likes(Storage(str(tmp_path / "b")))
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    first = land_social_likes(Storage(str(tmp_path / "c")), through="2024-03-04")
    second = land_social_likes(Storage(str(tmp_path / "c")), start="2024-03-05")
    assert set(first.files).isdisjoint(second.files)
    assert _files(tmp_path / "c") == _files(tmp_path / "a")
    land_social_likes(Storage(str(tmp_path / "d")), seed=1)
    assert _files(tmp_path / "d") != _files(tmp_path / "a")


def test_the_mess_is_there(tmp_path):
    land_social_likes(Storage(str(tmp_path)))
    likes = _likes(tmp_path)
    pairs = Counter((r["post_id"], r["user_id"]) for _, r in likes)
    repeated = [pair for pair, n in pairs.items() if n > 1]
    assert len(repeated) == 2  # one re-delivered like, one double tap
    times = {
        pair: sorted({r["liked_at"] for _, r in likes if (r["post_id"], r["user_id"]) == pair})
        for pair in repeated
    }
    assert sorted(len(t) for t in times.values()) == [1, 2]  # identical copy; two taps 5 s apart
    assert [r["liked_at"] for _, r in likes if not r["liked_at"].startswith("2024-")] == ["yesterday"]
    late = [(f, r) for f, r in likes if r["liked_at"].startswith("2024-") and r["liked_at"][:10] not in f]
    assert len(late) == 1 and late[0][1]["liked_at"][:10] == "2024-03-03" and "2024-03-06" in late[0][0]
    posts = (tmp_path / "social_likes" / "posts").glob("*.csv")
    ids = Counter(line.split(",")[0] for p in posts for line in p.read_text().splitlines()[1:])
    assert [n for n in ids.values() if n > 1] == [2]  # one post re-sent the next day
    assert any('"' in p.read_text() for p in (tmp_path / "social_likes" / "posts").glob("*.csv"))


def test_crafted_users_have_the_like_counts_that_make_the_ties():
    sample = generate()
    counts = Counter(like.post_id for like in sample.likes if like.liked_at != "yesterday")
    # subtract the re-delivered copy and the double tap: each pair counts once
    distinct = Counter(
        p for p, _ in {(x.post_id, x.user_id) for x in sample.likes if x.liked_at != "yesterday"}
    )
    assert sum(counts.values()) - sum(distinct.values()) == 2
    by_author: dict[str, list[int]] = {}
    for post in sample.posts:
        by_author.setdefault(post.user_id, []).append(distinct[post.post_id])
    for author, top in CRAFTED.items():
        assert sorted(by_author[author], reverse=True)[: len(top)] == list(top), author
    assert len(by_author["u07"]) == 1 and len(by_author["u12"]) == 2
    others = [n for author, ns in by_author.items() if author not in CRAFTED for n in ns]
    assert max(others) <= 12


def test_bad_windows_are_refused(tmp_path):
    with pytest.raises(ValueError, match="start 2024-03-05 is after through 2024-03-01"):
        land_social_likes(Storage(str(tmp_path)), start="2024-03-05", through="2024-03-01")
    with pytest.raises(ValueError, match="through must be a YYYY-MM-DD date, got 'March'"):
        land_social_likes(Storage(str(tmp_path)), through="March")
