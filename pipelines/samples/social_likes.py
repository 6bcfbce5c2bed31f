"""A deterministic social network sample: posts (CSV) and likes (NDJSON), one file per day, with mess.

Two weeks from 2024-03-01: 30 authors (``u01``-``u30``) write posts on days 1-12, and 45 users
(``u01``-``u45``; ``u31``-``u45`` only like) like them. The like counts of twelve authors are
fixed so the questions the cookbook asks have answers worth checking:

- ``u07`` has one post and ``u12`` two: their top-3 average is over fewer than 3 posts;
- ``u03`` and ``u21`` tie on the average and on top-3 likes (22.0 over 66): user_id decides;
- ``u12`` has the same 22.0 average over fewer likes (44), so it ranks after both;
- ``u06``, ``u08`` and ``u09`` tie at 16.0 over 48 across ranks 9-11, so the tie-break decides who
  makes the top 10 (``u09`` does not).

Every other post gets 0-12 likes, so no other author's average reaches the top 10.

Mess, as a real feed has it: one like delivered twice in the same file, one double tap (the same
user liking the same post twice, 5 seconds apart), one like delivered three days late (in a later
day's file), one like whose ``liked_at`` is not a timestamp, one post re-sent in the next day's file,
and titles with commas (quoted CSV fields).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field

from pipelines.components.resources import Storage

SEED = 20240301
START = dt.date(2024, 3, 1)
DAYS = 14
POST_DAYS = 12
AUTHORS = tuple(f"u{n:02d}" for n in range(1, 31))
USERS = tuple(f"u{n:02d}" for n in range(1, 46))
CRAFTED: dict[str, tuple[int, ...]] = {
    "u07": (40,),
    "u01": (30, 29, 28),
    "u02": (27, 26, 25),
    "u03": (24, 22, 20),
    "u21": (23, 22, 21),
    "u12": (23, 21),
    "u04": (20, 19, 18),
    "u05": (18, 17, 16),
    "u06": (16, 16, 16),
    "u08": (17, 16, 15),
    "u09": (18, 15, 15),
    "u10": (15, 15, 14),
}
# Authors whose crafted posts are all they have (the "fewer than 3 posts" cases).
ONLY_CRAFTED = ("u07", "u12")
MAX_OTHER_LIKES = 12
LATE_DAYS = 3

_WORDS = (
    ("Sunrise", "Coffee", "Rain", "Monday", "Weekend", "Harbour", "Garden", "Library", "Market", "Train"),
    ("notes", "thoughts", "photos", "plans", "lessons", "recipes", "sketches", "questions"),
    ("on the roof", "with friends", "before work", "after dark", "in March", "at the station"),
)


@dataclass(frozen=True)
class Post:
    post_id: str
    user_id: str
    created_at: dt.datetime
    title: str


@dataclass(frozen=True)
class Like:
    post_id: str
    user_id: str
    liked_at: str  # as delivered; not always a timestamp
    day: dt.date  # the day whose file delivers it


@dataclass
class Sample:
    posts: list[Post] = field(default_factory=list)
    likes: list[Like] = field(default_factory=list)
    post_days: dict[str, list[dt.date]] = field(default_factory=dict)  # post_id -> days whose file has it


@dataclass
class LandingReport:
    """What one landing call put in the landing zone."""

    files: list[str] = field(default_factory=list)  # every file of the range, as landed
    changed: list[str] = field(default_factory=list)  # the ones written now: new, or their bytes differed
    rows: dict[str, int] = field(default_factory=dict)


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def generate(seed: int = SEED) -> Sample:
    """The whole sample, deterministic for a seed (the files :func:`land_social_likes` writes)."""
    rng = random.Random(seed)
    end = dt.datetime.combine(START + dt.timedelta(days=DAYS - 1), dt.time(23, 59, 59))
    sample = Sample()
    targets: list[tuple[Post, int]] = []
    number = 0
    for author in AUTHORS:
        counts = list(CRAFTED.get(author, ()))
        if author not in ONLY_CRAFTED:
            floor = min(counts) if counts else MAX_OTHER_LIKES
            extra = rng.randint(0, 3) if counts else rng.randint(1, 6)
            counts += [rng.randint(0, min(floor, MAX_OTHER_LIKES)) for _ in range(extra)]
        for likes in counts:
            number += 1
            day = START + dt.timedelta(days=rng.randrange(POST_DAYS))
            created = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=rng.randrange(86_400))
            title = f"{rng.choice(_WORDS[0])} {rng.choice(_WORDS[1])}" + (
                f", {rng.choice(_WORDS[2])}" if rng.random() < 0.5 else ""
            )
            post = Post(f"p{number:04d}", author, created, title)
            sample.posts.append(post)
            sample.post_days[post.post_id] = [day]
            targets.append((post, likes))
    for post, likes in targets:
        likers = rng.sample([u for u in USERS if u != post.user_id], likes)
        for liker in likers:
            moment = min(post.created_at + dt.timedelta(minutes=rng.randint(1, 2 * 24 * 60)), end)
            sample.likes.append(Like(post.post_id, liker, _stamp(moment), moment.date()))
    sample.likes.sort(key=lambda like: (like.liked_at, like.post_id, like.user_id))

    # the mess
    resent = sample.posts[5]
    sample.post_days[resent.post_id].append(resent.created_at.date() + dt.timedelta(days=1))
    early = [i for i, like in enumerate(sample.likes) if like.day == START + dt.timedelta(days=2)]
    late = sample.likes[early[0]]
    sample.likes[early[0]] = Like(
        late.post_id, late.user_id, late.liked_at, late.day + dt.timedelta(LATE_DAYS)
    )
    twice = sample.likes[len(sample.likes) // 3]
    sample.likes.append(twice)
    tapped = next(
        like
        for like in sample.likes[len(sample.likes) // 2 :]
        if dt.datetime.fromisoformat(like.liked_at[:-1]).time() < dt.time(23, 59)
    )
    again = dt.datetime.fromisoformat(tapped.liked_at[:-1]) + dt.timedelta(seconds=5)
    sample.likes.append(Like(tapped.post_id, tapped.user_id, _stamp(again), tapped.day))
    liked = {(like.post_id, like.user_id) for like in sample.likes}
    target = sample.posts[0]
    stranger = next(u for u in USERS[30:] if (target.post_id, u) not in liked)
    sample.likes.append(
        Like(target.post_id, stranger, "yesterday", target.created_at.date() + dt.timedelta(1))
    )
    return sample


def _posts_csv(posts: list[Post]) -> bytes:
    lines = ["post_id,user_id,created_at,title"]
    for post in posts:
        title = post.title.replace('"', '""')
        title = f'"{title}"' if "," in title else title
        lines.append(f"{post.post_id},{post.user_id},{post.created_at:%Y-%m-%d %H:%M:%S},{title}")
    return ("\n".join(lines) + "\n").encode()


def _likes_ndjson(likes: list[Like]) -> bytes:
    rows = [json.dumps({"post_id": x.post_id, "user_id": x.user_id, "liked_at": x.liked_at}) for x in likes]
    return ("\n".join(rows) + "\n").encode()


def _day(text: str | None, default: dt.date, what: str) -> dt.date:
    if text is None:
        return default
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{what} must be a YYYY-MM-DD date, got {text!r}.") from exc


def land_social_likes(
    landing: Storage,
    *,
    start: str | None = None,
    through: str | None = None,
    seed: int = SEED,
    prefix: str = "social_likes",
) -> LandingReport:
    """Write the files of days [start, through] (default: the whole two weeks) into ``landing``.

    ``<prefix>/posts/posts_<day>.csv`` and ``<prefix>/likes/likes_<day>.ndjson``, one per day that
    has rows. A file holds what is delivered that day, so the late like is in a later day's file.
    Deterministic: the same call writes the same bytes; landing a later window adds its files.
    """
    first = _day(start, START, "start")
    last = _day(through, START + dt.timedelta(days=DAYS - 1), "through")
    if first > last:
        raise ValueError(f"start {first} is after through {last}.")
    sample = generate(seed)
    prefix = prefix.strip("/")
    report = LandingReport(rows={"posts": 0, "likes": 0})
    written: dict[str, bytes] = {}
    day = first
    while day <= last:
        posts = [p for p in sample.posts if day in sample.post_days[p.post_id]]
        likes = [like for like in sample.likes if like.day == day]
        if posts:
            written[f"{prefix}/posts/posts_{day.isoformat()}.csv"] = _posts_csv(posts)
            report.rows["posts"] += len(posts)
        if likes:
            written[f"{prefix}/likes/likes_{day.isoformat()}.ndjson"] = _likes_ndjson(likes)
            report.rows["likes"] += len(likes)
        day += dt.timedelta(days=1)
    report.changed = [rel for rel in sorted(written) if landing.write_changed(rel, written[rel])]
    report.files = sorted(written)
    return report
