"""What the benchmarks share: progress and report output, the machine line, the default data directory,
and the generated Amazon-Reviews-2023 data (reviews with power-law users and products, their ``meta_*``
products).

The generated data are deterministic for a seed. ``bench.ingest`` and ``bench.warehouse`` load the
reviews file, ``bench.read_path`` builds its publications from the same generator and meta file,
``bench.similarity`` draws its generated interactions with :func:`power_law` as the reviews do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

# Real data sets (MovieLens, ...) are read from here by default, never copied into the repository.
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MOVIELENS_DIR = DATA_DIR / "movielens"


# -- command line and output --------------------------------------------------------------------------

def argument_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``, described by the first paragraph of its docstring as written."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def say(message: str) -> None:
    """Progress, on stderr."""
    print(message, file=sys.stderr, flush=True)


def machine() -> str:
    """The machine in a line, with the time of a fixed pure-Python loop: the same machine type has run 1.6x
    slower or faster from one day to the next, so figures from different runs compare only beside it."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = "GPU present" if shutil.which("nvidia-smi") else "no GPU"
    started = time.perf_counter()
    sum(range(10**7))
    probe = time.perf_counter() - started
    return (f"{cores} CPU cores available ({os.cpu_count()} online), {gpu}, {platform.machine()} "
            f"{platform.system()}, Python {platform.python_version()}, sum(range(10**7)) {probe:.3f} s")


def code_commit() -> str:
    """The commit of the code being measured (the checkout this module is in), ``+dirty`` when tracked files
    differ from it, or ``unknown`` outside a git checkout: figures name the code they were measured on."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def emit(report: list[str], figures: dict, as_json: bool) -> None:
    """The report on stdout; with ``--json`` the figures as JSON on stdout and the report on stderr."""
    text = "\n".join(report)
    if as_json:
        print(text, file=sys.stderr)
        print(json.dumps(figures, indent=2, default=float))  # default: numpy scalars
    else:
        print(text)


# -- generated reviews ---------------------------------------------------------------------------------

_WORDS = [
    "the", "a", "and", "to", "it", "i", "this", "for", "is", "was", "of", "my", "with", "but", "not", "very",
    "great", "good", "product", "love", "works", "well", "quality", "price", "use", "used", "would", "one",
    "really", "like", "just", "so", "easy", "size", "fit", "time", "can", "have", "them", "on", "little", "bought",
    "recommend", "nice", "perfect", "back", "did", "after", "only", "will", "no", "made", "does", "buy", "better",
    "than", "also", "too", "much", "do", "get", "all", "your", "what", "as", "are", "be", "they", "if", "or",
    "when", "these", "out", "up", "more", "even", "been", "other", "because", "first", "color", "ordered",
    "received", "item", "happy", "cheap", "broke", "month", "week", "year", "returned", "comfortable", "small",
    "large", "soft", "sturdy", "expected", "described", "disappointed", "excellent", "awesome", "fine", "okay",
    "battery", "charger", "cable", "phone", "case", "screen", "sound", "light", "water", "bottle", "bag", "shoes",
    "shirt", "daughter", "son", "husband", "wife", "gift", "kids", "dog", "cat", "kitchen", "coffee", "tea", "book",
    "story", "author", "read", "characters", "recipe",
]
_ODD_WORDS = ["café", "naïve", "—", "👍", '"great"', "<br />", "5/5", "100%", "$20", "didn't", "it's", "I'm"]
_BASE32 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_START_MS = int(datetime(2015, 1, 1, tzinfo=UTC).timestamp() * 1000)
_END_MS = int(datetime(2023, 9, 1, tzinfo=UTC).timestamp() * 1000)


@dataclass
class Reviews:
    """The generated records, column by column, in file order."""

    rating: np.ndarray
    title: list[str]
    text: list[str]
    image: list[str | None]  # image id, for 8% of reviews
    asin: list[str]
    parent_asin: list[str]
    user_id: list[str]
    timestamp: np.ndarray  # epoch milliseconds
    helpful_vote: np.ndarray
    verified_purchase: np.ndarray
    # parent ASIN -> (main category, sub-category) where the reviews follow tastes for categories
    categories: dict[str, tuple[str, str]] | None = None

    def __len__(self) -> int:
        return len(self.title)


def _ids(rng: np.random.Generator, n: int, prefix: str, alphabet: bytes, width: int) -> list[str]:
    codes = np.frombuffer(alphabet, dtype=np.uint8)[rng.integers(0, len(alphabet), (n, width))]
    return [prefix + b.decode() for b in codes.view(f"S{width}").ravel().tolist()]


def power_law(rng: np.random.Generator, n_values: int, exponent: float, size: int) -> np.ndarray:
    """``size`` draws of 0..n_values-1, the k-th most frequent with probability ~ 1/k**exponent."""
    weights = 1.0 / np.arange(1, n_values + 1) ** exponent
    return rng.permutation(n_values)[rng.choice(n_values, size=size, p=weights / weights.sum())]


def _phrases(rng: np.random.Generator, pool: str, starts: np.ndarray, size: int, low: int, high: int,
             median: float) -> list[str]:
    """``size`` word-aligned slices of ``pool``, log-normal lengths clipped to [low, high], capitalised."""
    lengths = np.clip(np.exp(rng.normal(np.log(median), 0.45, size)), low, high).astype(np.int64)
    first = starts[rng.integers(0, len(starts) - high, size)]
    end = starts[np.searchsorted(starts, first + lengths, side="right")] - 1  # the space before a word
    return [pool[a].upper() + pool[a + 1:b] for a, b in zip(first.tolist(), end.tolist(), strict=True)]


def generate_reviews(n: int, seed: int, n_users: int = 100_000, n_items: int = 20_000,
                     taste_strength: float = 0.0) -> Reviews:
    """``n`` reviews: power-law users (exponent 0.5) and products (0.7), 60% on the parent ASIN and the
    rest on one of its three variants, realistic stars, texts of English words, 8% with an image.

    With ``taste_strength`` > 0, the structure of the project's sample generator, planted so that a
    personalised model has something to find that popularity does not: every product is in one of the
    16 sub-categories (``categories``, for ``write_meta``), every user has a taste for one to three of
    them (Dirichlet weights), and that share of the reviews picks a sub-category from the user's taste,
    then a product in it by a popularity order of the tastes' own (power law, 0.7; not the order of the
    other reviews, so a product can be a niche favourite). The other reviews are drawn as without tastes;
    so are all the other columns (taste_strength=0 gives the same records as before it existed)."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array(_WORDS + _ODD_WORDS, dtype=object)
    weights = 1.0 / np.arange(1, len(vocabulary) + 1) ** 0.9
    tokens = rng.choice(vocabulary, size=max(200_000, n * 4), p=weights / weights.sum())
    marks = rng.random(len(tokens))
    tokens = np.where(marks < 1 / 11, tokens + ".", np.where(marks < 1 / 11 + 1 / 15, tokens + ",", tokens))
    pool = " ".join(tokens.tolist())
    starts = np.concatenate(([0], np.cumsum(np.char.str_len(tokens.astype(str)) + 1)[:-1]))

    users = _ids(rng, n_users, "AE", _BASE32, 26)
    parents = _ids(rng, n_items, "B0", _ALNUM, 8)
    variants = _ids(rng, n_items * 3, "B0", _ALNUM, 8)
    user = power_law(rng, n_users, 0.5, n)
    item = power_law(rng, n_items, 0.7, n)
    categories = None
    if taste_strength > 0:
        item, leaf_of_item = _follow_tastes(np.random.default_rng([seed, 1]), user, item, n_users, n_items,
                                            taste_strength)
        categories = {parents[i]: _LEAVES[leaf] for i, leaf in enumerate(leaf_of_item.tolist())}
    variant = np.where(rng.random(n) < 0.6, -1, item * 3 + rng.integers(0, 3, n))
    with_image = rng.random(n) < 0.08
    image_ids = _ids(rng, int(with_image.sum()), "", _ALNUM + b"abcdefghijklmnopqrstuvwxyz", 11)
    image: list[str | None] = [None] * n
    for position, image_id in zip(np.flatnonzero(with_image).tolist(), image_ids, strict=True):
        image[position] = image_id
    return Reviews(
        rating=rng.choice(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), size=n, p=[0.10, 0.06, 0.08, 0.14, 0.62]),
        title=_phrases(rng, pool, starts, n, 20, 60, 35),
        text=_phrases(rng, pool, starts, n, 100, 600, 250),
        image=image,
        asin=[parents[i] if v < 0 else variants[v] for i, v in zip(item.tolist(), variant.tolist(), strict=True)],
        parent_asin=[parents[i] for i in item.tolist()],
        user_id=[users[u] for u in user.tolist()],
        timestamp=_START_MS + (rng.beta(2.0, 1.2, n) * (_END_MS - _START_MS)).astype(np.int64),
        helpful_vote=np.minimum(rng.pareto(1.5, n) * 0.8, 10_000).astype(np.int64),
        verified_purchase=rng.random(n) < 0.9,
        categories=categories,
    )


def _follow_tastes(rng: np.random.Generator, user: np.ndarray, item: np.ndarray, n_users: int, n_items: int,
                   strength: float) -> tuple[np.ndarray, np.ndarray]:
    """``item`` with a ``strength`` share of the reviews re-drawn from their user's taste (see
    ``generate_reviews``), and each product's sub-category (an index into ``_LEAVES``)."""
    leaf_of_item = rng.integers(0, len(_LEAVES), n_items)
    popularity = 1.0 / rng.permutation(np.arange(1, n_items + 1)) ** 0.7
    favourites = rng.integers(0, len(_LEAVES), (n_users, 3))
    weights = rng.gamma(1.0, size=(n_users, 3)) * (np.arange(3) < rng.integers(1, 4, n_users)[:, None])
    cumulative = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    tasteful = np.flatnonzero(rng.random(len(item)) < strength)
    slot = (rng.random(len(tasteful))[:, None] > cumulative[user[tasteful]]).sum(axis=1).clip(max=2)
    leaf = favourites[user[tasteful], slot]
    item = item.copy()
    for chosen in range(len(_LEAVES)):
        members, reviews = np.flatnonzero(leaf_of_item == chosen), tasteful[leaf == chosen]
        if len(members) and len(reviews):
            odds = popularity[members] / popularity[members].sum()
            item[reviews] = rng.choice(members, size=len(reviews), p=odds)
    return item, leaf_of_item


def _image(image_id: str) -> dict[str, str]:
    url = f"https://m.media-amazon.com/images/I/{image_id}"
    return {"small_image_url": f"{url}._SL256_.jpg", "medium_image_url": f"{url}._SL800_.jpg",
            "large_image_url": f"{url}.jpg", "attachment_type": "IMAGE"}


def write_jsonl(reviews: Reviews, path: Path) -> np.ndarray:
    """Write the file as Amazon publishes it (same key order); returns each line's signed CRC-32."""
    crcs = np.empty(len(reviews), dtype=np.int64)
    columns = zip(reviews.rating.tolist(), reviews.title, reviews.text, reviews.image, reviews.asin,
                  reviews.parent_asin, reviews.user_id, reviews.timestamp.tolist(), reviews.helpful_vote.tolist(),
                  reviews.verified_purchase.tolist(), strict=True)
    with path.open("wb") as fh:
        batch: list[bytes] = []
        for i, (rating, title, text, image, asin, parent, user, ts, votes, verified) in enumerate(columns):
            line = orjson.dumps({
                "rating": rating, "title": title, "text": text, "images": [_image(image)] if image else [],
                "asin": asin, "parent_asin": parent, "user_id": user, "timestamp": ts, "helpful_vote": votes,
                "verified_purchase": verified,
            })
            crcs[i] = zlib.crc32(line)
            batch.append(line)
            if len(batch) == 100_000:
                fh.write(b"\n".join(batch) + b"\n")
                batch = []
        if batch:
            fh.write(b"\n".join(batch) + b"\n")
    return np.where(crcs >= 1 << 31, crcs - (1 << 32), crcs).astype(np.int32)


# -- generated products --------------------------------------------------------------------------------

_CATEGORIES = {
    "Electronics": ["Headphones", "Cameras", "Computers", "Phones"],
    "Home & Kitchen": ["Cookware", "Bedding", "Storage"],
    "Books": ["Fiction", "History", "Science", "Children"],
    "Toys & Games": ["Puzzles", "Board Games"],
    "Sports & Outdoors": ["Camping", "Cycling", "Fitness"],
}
_LEAVES = [(main, sub) for main, subs in _CATEGORIES.items() for sub in subs]
_COLORS = ["Black", "White", "Red", "Blue", "Green", "Silver"]


def write_meta(parent_asins: list[str], path: Path, seed: int,
               categories: dict[str, tuple[str, str]] | None = None) -> None:
    """A ``meta_*`` line for every distinct product: a two-level category path (``categories``' where
    given, else at random), price, ratings, brand, color and date first available."""
    rng = np.random.default_rng(seed)
    mains = list(_CATEGORIES)
    with path.open("wb") as fh:
        for i, asin in enumerate(sorted(set(parent_asins))):
            main = mains[int(rng.integers(0, len(mains)))]
            sub = _CATEGORIES[main][int(rng.integers(0, len(_CATEGORIES[main])))]
            if categories is not None:
                main, sub = categories[asin]
            day = int(rng.integers(0, 3000))
            fh.write(orjson.dumps({
                "main_category": main, "title": f"{sub} item {i}",
                "average_rating": round(float(rng.uniform(1, 5)), 1), "rating_number": int(rng.integers(0, 5000)),
                "features": [], "description": [f"A {sub.lower()} product."],
                "price": round(float(rng.uniform(3, 300)), 2), "images": [], "videos": [], "store": f"Store {i % 500}",
                "categories": [main, sub],
                "details": {"Brand": f"Brand {i % 300}", "Color": _COLORS[i % len(_COLORS)],
                            "Date First Available": time.strftime("%B %d, %Y", time.gmtime(1.3e9 + day * 86400))},
                "parent_asin": asin, "bought_together": None,
            }) + b"\n")


# -- a throw-away project instance (bench.refresh_overhead, bench.pipeline_scale) ---------------------------

def throwaway_environment(home: Path) -> tuple[dict[str, str], str]:
    """The environment of a project instance under ``home`` (its own REC_HOME, landing directory and embedded
    PostgreSQL on a free port; nothing of the caller's REC_*, PG* or DAGSTER_* settings), completed with what
    ``rec env`` exports for Dagster; and the warehouse's URL. Starts the embedded server; stop it with
    ``rec db stop`` in that environment."""
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("REC_", "PG", "DAGSTER_"))}
    env |= {"REC_HOME": str(home / "rec"), "REC_LANDING_DIR": str(home / "landing"), "REC_EMBEDDED_PORT": str(port)}
    script = ("import json; from rec_orchestration.db import servers; "
              "print(json.dumps([servers.dagster_environment(), servers.warehouse_settings().url()]))")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    dagster_env, warehouse_url = json.loads(done.stdout.strip().splitlines()[-1])
    return env | dagster_env, warehouse_url


def _dagster_storage(env: dict[str, str]):
    """A connection to the Dagster storage of the project instance ``env`` describes."""
    import psycopg

    return psycopg.connect(env["REC_DAGSTER_PG_URL"].replace("postgresql+psycopg2://", "postgresql://"))


def _latest_run_id(conn) -> str:
    return conn.execute("SELECT run_id FROM runs ORDER BY create_timestamp DESC LIMIT 1").fetchone()[0]


def latest_run_events(env: dict[str, str]) -> list[tuple[str, str | None, float]]:
    """``(event type, step key, epoch seconds)`` of the step and run start/success events of the instance's
    latest run. Dagster stores a run's start and success under their older names (PIPELINE_*) there."""
    with _dagster_storage(env) as conn:
        run_id = _latest_run_id(conn)
        return [(kind, step, float(at)) for kind, step, at in conn.execute(
            """SELECT dagster_event_type, step_key, extract(epoch FROM timestamp) FROM event_logs
               WHERE run_id = %s AND dagster_event_type IN ('STEP_START', 'STEP_SUCCESS', 'RUN_START',
                                                            'RUN_SUCCESS', 'PIPELINE_START', 'PIPELINE_SUCCESS')""",
            (run_id,)).fetchall()]


def step_seconds(events: list[tuple[str, str | None, float]]) -> dict[str, float]:
    """Each step's STEP_START to STEP_SUCCESS: its own work, its process start and imports excluded."""
    starts = {step: at for kind, step, at in events if kind == "STEP_START"}
    return {step: at - starts[step] for kind, step, at in events if kind == "STEP_SUCCESS" and step in starts}


def step_pids(env: dict[str, str]) -> dict[str, int]:
    """The process id each step of the instance's latest run ran in (its STEP_START event records it)."""
    with _dagster_storage(env) as conn:
        rows = conn.execute("SELECT step_key, event FROM event_logs WHERE run_id = %s AND dagster_event_type = "
                            "'STEP_START'", (_latest_run_id(conn),)).fetchall()
    return {step: json.loads(event)["dagster_event"]["pid"] for step, event in rows}
