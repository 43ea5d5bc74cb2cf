"""Deterministic sample data in the Amazon Reviews 2023 format, with structure a recommender can learn.

Writes two files into a landing directory:

``reviews.jsonl``
    one review per line: ``rating, title, text, images, asin, parent_asin, user_id, timestamp`` (ms),
    ``helpful_vote, verified_purchase``.
``meta.jsonl``
    one product per line: ``main_category, title, average_rating, rating_number, features,
    description, price, images, videos, store, categories, details, parent_asin, bought_together``.

Planted structure (so that a personalised model has something to find that popularity does not):

* products belong to one of ``n_categories`` leaf categories (``main_category > sub-category``);
  product popularity follows a power law (Zipf exponent ``popularity_exponent``);
* every user has a taste: a Dirichlet mixture concentrated on one to three leaf categories; a review
  picks a category from that taste with probability ``taste_strength`` (otherwise from global
  popularity), then a product in it by popularity;
* user activity is power-law too (at least ``min_reviews_per_user`` reviews each);
* ratings are higher inside a user's taste; timestamps cover ``days`` days ending at ``end_date``,
  with a daily cycle (more reviews in the evening) and each user active over a sub-window.

The same parameters always give byte-identical files, so re-generating never creates "new" data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

CATEGORY_TREE: dict[str, list[str]] = {
    "Musical Instruments": ["Guitars", "Keyboards", "Drums & Percussion", "Studio Recording"],
    "Books": ["Science Fiction", "Cookbooks", "History", "Children's Books"],
    "Beauty": ["Skin Care", "Hair Care", "Fragrance", "Makeup"],
    "Electronics": ["Headphones", "Cameras", "Computer Accessories", "Smart Home"],
    "Home & Kitchen": ["Cookware", "Coffee & Tea", "Bedding", "Storage"],
    "Sports & Outdoors": ["Camping", "Cycling", "Fitness", "Fishing"],
    "Toys & Games": ["Board Games", "Puzzles", "Building Sets", "Dolls"],
    "Grocery": ["Snacks", "Tea", "Spices", "Baking"],
}

_ADJECTIVES = ["Classic", "Pro", "Compact", "Premium", "Essential", "Deluxe", "Eco", "Smart", "Vintage",
               "Ultra", "Everyday", "Travel", "Studio", "Family", "Handmade", "Organic"]
_NOUN_BY_SUB = {
    "Guitars": "Guitar", "Keyboards": "Keyboard", "Drums & Percussion": "Drum Kit",
    "Studio Recording": "Microphone", "Science Fiction": "Novel", "Cookbooks": "Cookbook",
    "History": "History Book", "Children's Books": "Picture Book", "Skin Care": "Moisturizer",
    "Hair Care": "Shampoo", "Fragrance": "Eau de Parfum", "Makeup": "Lipstick", "Headphones": "Headphones",
    "Cameras": "Camera", "Computer Accessories": "Keyboard Cover", "Smart Home": "Smart Plug",
    "Cookware": "Skillet", "Coffee & Tea": "Coffee Grinder", "Bedding": "Duvet", "Storage": "Storage Box",
    "Camping": "Tent", "Cycling": "Bike Light", "Fitness": "Yoga Mat", "Fishing": "Fishing Reel",
    "Board Games": "Board Game", "Puzzles": "Jigsaw Puzzle", "Building Sets": "Building Set",
    "Dolls": "Doll", "Snacks": "Trail Mix", "Tea": "Green Tea", "Spices": "Spice Set", "Baking": "Flour",
}
_STORES = ["Acme", "Northwind", "Globex", "Initech", "Umbrella", "Stark Goods", "Wayne Supply", "Hooli",
           "Vandelay", "Soylent", "Wonka", "Tyrell"]
_COLORS = ["Black", "White", "Red", "Blue", "Green", "Silver", "Natural", "Pink"]
_PRAISE = ["Works great", "Exactly as described", "Love it", "Great value", "Would buy again",
           "Excellent quality", "Perfect gift", "Five stars"]
_NEUTRAL = ["It is okay", "Does the job", "Average quality", "Not bad", "Fine for the price"]
_COMPLAINT = ["Broke after a week", "Not as described", "Disappointed", "Poor quality", "Returned it"]

REVIEWS_FILE = "reviews.jsonl"
META_FILE = "meta.jsonl"


@dataclass(frozen=True)
class SampleSpec:
    """Size and shape of the generated sample. Defaults keep `make run` to a few minutes on 2 cores."""

    n_users: int = 2000
    n_products: int = 600
    min_reviews_per_user: int = 5
    mean_extra_reviews_per_user: float = 9.0
    taste_strength: float = 0.85
    popularity_exponent: float = 0.9
    days: int = 730
    end_date: str = "2023-09-01"
    seed: int = 42

    @property
    def n_categories(self) -> int:
        return sum(len(v) for v in CATEGORY_TREE.values())


@dataclass(frozen=True)
class SampleFiles:
    reviews: Path
    meta: Path
    n_reviews: int
    n_products: int
    n_users: int
    changed: bool


def _asin(prefix: str, index: int) -> str:
    return f"{prefix}{index:08d}"


def generate_records(spec: SampleSpec) -> tuple[list[dict], list[dict]]:
    """Build the review and product records (in memory; sizes here are sample sizes)."""
    rng = np.random.default_rng(spec.seed)
    leaves = [(main, sub) for main, subs in CATEGORY_TREE.items() for sub in subs]
    n_leaves = len(leaves)

    # Products: a leaf category each, Zipf popularity over a random permutation of ranks.
    product_leaf = rng.integers(0, n_leaves, size=spec.n_products)
    ranks = rng.permutation(spec.n_products) + 1
    popularity = 1.0 / ranks.astype(float) ** spec.popularity_exponent
    popularity /= popularity.sum()
    quality = rng.normal(0.0, 0.5, size=spec.n_products)  # some products are just better
    price = np.round(rng.lognormal(mean=3.0, sigma=0.8, size=spec.n_products), 2)

    # Users: taste concentrated on 1-3 leaves.
    n_fav = rng.integers(1, 4, size=spec.n_users)
    taste = np.full((spec.n_users, n_leaves), 0.02)
    for u in range(spec.n_users):
        favourites = rng.choice(n_leaves, size=n_fav[u], replace=False)
        taste[u, favourites] += rng.dirichlet(np.ones(n_fav[u])) * 5.0
    taste /= taste.sum(axis=1, keepdims=True)
    activity = spec.min_reviews_per_user + np.minimum(
        rng.pareto(1.6, size=spec.n_users) * spec.mean_extra_reviews_per_user * 0.6,
        spec.n_products // 4,
    ).astype(int)

    end_ms = int(datetime.fromisoformat(spec.end_date).replace(tzinfo=UTC).timestamp() * 1000)
    span_ms = spec.days * 86_400_000
    hour_weights = np.array([1, 1, 1, 1, 1, 1, 2, 3, 4, 4, 4, 5, 6, 5, 5, 5, 6, 7, 9, 10, 10, 8, 5, 2], float)
    hour_weights /= hour_weights.sum()

    # P(product | leaf) by popularity, precomputed per leaf.
    leaf_members = [np.flatnonzero(product_leaf == leaf) for leaf in range(n_leaves)]
    leaf_probs = [popularity[m] / popularity[m].sum() if len(m) else m for m in leaf_members]

    reviews: list[dict] = []
    product_ratings: list[list[float]] = [[] for _ in range(spec.n_products)]
    for u in range(spec.n_users):
        user_id = "U" + format(u, "07d") + format(int(rng.integers(0, 36**4)), "x").upper()
        wanted = int(min(activity[u], spec.n_products))
        chosen: set[int] = set()
        attempts = 0
        while len(chosen) < wanted and attempts < wanted * 20:
            attempts += 1
            if rng.random() < spec.taste_strength:
                leaf = int(rng.choice(n_leaves, p=taste[u]))
                if not len(leaf_members[leaf]):
                    continue
                item = int(rng.choice(leaf_members[leaf], p=leaf_probs[leaf]))
            else:
                item = int(rng.choice(spec.n_products, p=popularity))
            chosen.add(item)
        start_offset = int(rng.integers(0, span_ms // 2))
        window = span_ms - start_offset
        for item in sorted(chosen):
            affinity = taste[u, product_leaf[item]] * n_leaves  # >1 inside taste
            score = 3.9 + 0.35 * np.log(affinity) + quality[item] + rng.normal(0, 0.7)
            rating = float(np.clip(np.round(score), 1, 5))
            day = int(rng.integers(0, max(1, window // 86_400_000)))
            hour = int(rng.choice(24, p=hour_weights))
            ts = end_ms - span_ms + start_offset + day * 86_400_000 + hour * 3_600_000 + int(rng.integers(0, 3_600_000))
            main, sub = leaves[product_leaf[item]]
            headline = _PRAISE if rating >= 4 else _NEUTRAL if rating == 3 else _COMPLAINT
            title = str(rng.choice(headline))
            parent = _asin("B0", item)
            reviews.append({
                "rating": rating,
                "title": title,
                "text": f"{title}. My {_NOUN_BY_SUB[sub].lower()} for {sub.lower()} "
                        f"{'exceeded' if rating >= 4 else 'did not meet' if rating <= 2 else 'met'} expectations.",
                "images": [],
                "asin": _asin("B1", item * 3 + int(rng.integers(0, 3))),  # a variant of the parent
                "parent_asin": parent,
                "user_id": user_id,
                "timestamp": ts,
                "helpful_vote": int(rng.poisson(1.2)),
                "verified_purchase": bool(rng.random() < 0.85),
            })
            product_ratings[item].append(rating)
    reviews.sort(key=lambda r: (r["timestamp"], r["user_id"], r["parent_asin"]))

    products: list[dict] = []
    for item in range(spec.n_products):
        main, sub = leaves[product_leaf[item]]
        noun = _NOUN_BY_SUB[sub]
        adjective = _ADJECTIVES[int(rng.integers(0, len(_ADJECTIVES)))]
        store = _STORES[int(rng.integers(0, len(_STORES)))]
        color = _COLORS[int(rng.integers(0, len(_COLORS)))]
        ratings = product_ratings[item]
        # Amazon's own counts cover all of Amazon, not just this sample: more than we generated.
        rating_number = len(ratings) * int(rng.integers(1, 4)) + int(rng.integers(0, 5))
        average = round(float(np.mean(ratings)), 1) if ratings else None
        first_available = datetime.fromtimestamp(
            (end_ms - span_ms - int(rng.integers(0, 3 * 365)) * 86_400_000) / 1000, UTC
        )
        products.append({
            "main_category": main,
            "title": f"{store} {adjective} {noun} ({color})",
            "average_rating": average,
            "rating_number": rating_number,
            "features": [f"{adjective} design", f"Made for {sub.lower()}"],
            "description": [f"A {adjective.lower()} {noun.lower()} for lovers of {sub.lower()}."],
            "price": float(price[item]) if rng.random() > 0.1 else None,
            "images": [],
            "videos": [],
            "store": store,
            "categories": [main, sub],
            "details": {
                "Color": color,
                "Brand": store,
                "Date First Available": first_available.strftime("%B %d, %Y"),
            },
            "parent_asin": _asin("B0", item),
            "bought_together": None,
        })
    return reviews, products


def _write_if_changed(path: Path, lines: list[dict]) -> bool:
    payload = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in lines).encode("utf-8")
    if path.exists() and path.read_bytes() == payload:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)  # atomic: the sensor and ingestion never see half a file
    return True


def write_sample(landing_dir: Path, spec: SampleSpec | None = None) -> SampleFiles:
    """Write ``reviews.jsonl`` and ``meta.jsonl`` into ``landing_dir`` (unchanged files are left alone)."""
    spec = spec or SampleSpec()
    landing_dir.mkdir(parents=True, exist_ok=True)
    reviews, products = generate_records(spec)
    meta_path = landing_dir / META_FILE
    reviews_path = landing_dir / REVIEWS_FILE
    changed_meta = _write_if_changed(meta_path, products)
    changed_reviews = _write_if_changed(reviews_path, reviews)
    return SampleFiles(
        reviews=reviews_path,
        meta=meta_path,
        n_reviews=len(reviews),
        n_products=len(products),
        n_users=len({r["user_id"] for r in reviews}),
        changed=changed_meta or changed_reviews,
    )

