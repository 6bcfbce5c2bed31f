"""The social likes transforms on hand-made posts and likes."""

import polars as pl
import pytest

from pipelines.transforms.social_likes import likes_per_user, top_users, user_top3_avg


def _inputs(likes_per_post: dict[str, tuple[str, int]], extra_likes=()):
    """posts: post_id -> (author, number of likes); likers are l0, l1, ... ."""
    posts = pl.DataFrame(
        {"post_id": list(likes_per_post), "user_id": [a for a, _ in likes_per_post.values()]}
    )
    likes = [(post, f"l{i}") for post, (_, n) in likes_per_post.items() for i in range(n)]
    likes += list(extra_likes)
    frame = pl.DataFrame(likes, schema={"post_id": pl.String, "user_id": pl.String}, orient="row")
    return {"posts": posts.lazy(), "likes": frame.lazy()}


def test_likes_per_user_counts_written_received_and_given():
    inputs = _inputs(
        {"p1": ("a", 2), "p2": ("a", 0), "p3": ("b", 1)}, extra_likes=[("p1", "b"), ("gone", "a")]
    )
    out = likes_per_user(inputs).collect()
    rows = {
        r["user_id"]: (r["posts"], r["likes_received"], r["likes_given"]) for r in out.iter_rows(named=True)
    }
    # a: 2 posts, 3 likes received (p1 by l0, l1, b), 1 given (on a post not in posts)
    assert rows["a"] == (2, 3, 1)
    assert rows["b"] == (1, 1, 1)
    assert rows["l0"] == (0, 0, 2) and rows["l1"] == (0, 0, 1)
    assert out.get_column("user_id").to_list() == sorted(rows)


def test_top3_average_uses_the_three_most_liked_posts_or_fewer():
    inputs = _inputs(
        {"p1": ("a", 5), "p2": ("a", 1), "p3": ("a", 9), "p4": ("a", 7), "p5": ("b", 4), "p6": ("c", 0)}
    )
    out = {r["user_id"]: r for r in user_top3_avg(inputs).collect().iter_rows(named=True)}
    assert (out["a"]["posts"], out["a"]["top3_posts"], out["a"]["top3_likes"]) == (4, 3, 21)
    assert out["a"]["top3_avg_likes"] == pytest.approx(7.0)
    assert (out["b"]["top3_posts"], out["b"]["top3_avg_likes"]) == (1, 4.0)
    assert (out["c"]["top3_posts"], out["c"]["top3_avg_likes"]) == (1, 0.0)


def test_top_users_keeps_ten_and_breaks_ties_by_likes_then_user_id():
    rows = [(f"u{n:02d}", 10.0 + n, 3 * (10 + n), 3) for n in range(1, 10)]  # u01..u09, averages 11-19
    rows += [("u20", 5.0, 15, 3), ("u11", 5.0, 15, 3), ("u10", 5.0, 5, 1)]  # three tied at 5.0
    frame = pl.DataFrame(
        rows, schema=["user_id", "top3_avg_likes", "top3_likes", "top3_posts"], orient="row"
    ).with_columns(pl.lit(9).alias("posts"))
    out = top_users({"user_top3_avg": frame.lazy()}).collect()
    assert out.get_column("rank").to_list() == list(range(1, 11))
    assert out.get_column("user_id").to_list()[:9] == [f"u{n:02d}" for n in range(9, 0, -1)]
    # the tie at 5.0: u11 and u20 have 15 top-3 likes, u10 only 5; u11 < u20 takes the last place
    assert out.get_column("user_id")[9] == "u11"
    assert out.schema["rank"] == pl.Int64


def test_fewer_than_ten_users_are_all_ranked():
    frame = pl.DataFrame(
        {"user_id": ["b", "a"], "top3_avg_likes": [2.0, 2.0], "top3_likes": [6, 6], "top3_posts": [3, 3]}
    )
    out = top_users({"user_top3_avg": frame.lazy()}).collect()
    assert out.select("rank", "user_id").rows() == [(1, "a"), (2, "b")]
