"""Social likes aggregates: likes per user, each user's top-3 average, the top 10 users.

Likes are counted once per (post, user): the cleaned ``likes`` table is keyed on that pair, so a
double tap or a re-delivered like is one like. A like on a post missing from ``posts`` counts as
given by its user but is received by no one.
"""

from __future__ import annotations

import polars as pl

TOP_N = 10
TOP_POSTS = 3


def _likes_per_post(posts: pl.LazyFrame, likes: pl.LazyFrame) -> pl.LazyFrame:
    """Every post with its author and like count (0 for a post nobody liked)."""
    counts = likes.group_by("post_id").agg(pl.len().cast(pl.Int64).alias("likes"))
    return (
        posts.select("post_id", "user_id")
        .join(counts, on="post_id", how="left")
        .with_columns(pl.col("likes").fill_null(0))
    )


def likes_per_user(inputs: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    """One row per user who posted or liked: posts written, likes received on them, likes given."""
    posts, likes = inputs["posts"], inputs["likes"]
    per_post = _likes_per_post(posts, likes)
    written = per_post.group_by("user_id").agg(
        pl.len().cast(pl.Int64).alias("posts"), pl.col("likes").sum().cast(pl.Int64).alias("likes_received")
    )
    given = likes.group_by("user_id").agg(pl.len().cast(pl.Int64).alias("likes_given"))
    return (
        written.join(given, on="user_id", how="full", coalesce=True)
        .with_columns(pl.col("posts", "likes_received", "likes_given").fill_null(0))
        .select("user_id", "posts", "likes_received", "likes_given")
        .sort("user_id")
    )


def user_top3_avg(inputs: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    """Per author, the average likes of their 3 most-liked posts (of all their posts if fewer than 3).

    ``top3_posts`` says how many posts the average is over, so a user with one post is visible as such.
    """
    per_post = _likes_per_post(inputs["posts"], inputs["likes"])
    top = (
        per_post.sort(["user_id", "likes", "post_id"], descending=[False, True, False])
        .group_by("user_id", maintain_order=True)
        .head(TOP_POSTS)
    )
    totals = per_post.group_by("user_id").agg(pl.len().cast(pl.Int64).alias("posts"))
    return (
        top.group_by("user_id")
        .agg(
            pl.len().cast(pl.Int64).alias("top3_posts"),
            pl.col("likes").sum().cast(pl.Int64).alias("top3_likes"),
            pl.col("likes").cast(pl.Float64).mean().alias("top3_avg_likes"),
        )
        .join(totals, on="user_id")
        .select("user_id", "posts", "top3_posts", "top3_likes", "top3_avg_likes")
        .sort("user_id")
    )


def top_users(inputs: dict[str, pl.LazyFrame]) -> pl.LazyFrame:
    """The 10 users with the highest top-3 average, ranked 1-10.

    Ties on the average go to the user with more top-3 likes (an average over more posts), then to
    the smaller user_id, so the ranking is the same on every run.
    """
    return (
        inputs["user_top3_avg"]
        .select("user_id", "top3_avg_likes", "top3_likes", "top3_posts")
        .sort(["top3_avg_likes", "top3_likes", "user_id"], descending=[True, True, False])
        .head(TOP_N)
        .with_row_index("rank", offset=1)
        .with_columns(pl.col("rank").cast(pl.Int64))
    )
