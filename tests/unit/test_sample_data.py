"""The sample generator: deterministic files in the Amazon Reviews 2023 format, with learnable structure."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np

from rec_orchestration.sample_data import SampleSpec, generate_records, write_sample

SPEC = SampleSpec(n_users=300, n_products=150, seed=3)


def test_same_spec_writes_identical_bytes_and_reports_unchanged(tmp_path):
    first = write_sample(tmp_path / "a", SPEC)
    second = write_sample(tmp_path / "b", SPEC)
    assert first.reviews.read_bytes() == second.reviews.read_bytes()
    assert first.meta.read_bytes() == second.meta.read_bytes()
    again = write_sample(tmp_path / "a", SPEC)
    assert first.changed and not again.changed
    assert write_sample(tmp_path / "a", SampleSpec(n_users=300, n_products=150, seed=4)).changed


def test_records_have_the_amazon_2023_fields(tmp_path):
    files = write_sample(tmp_path, SPEC)
    review = json.loads(files.reviews.read_text().splitlines()[0])
    assert set(review) == {"rating", "title", "text", "images", "asin", "parent_asin", "user_id", "timestamp",
                           "helpful_vote", "verified_purchase"}
    assert review["timestamp"] > 10**12  # milliseconds
    product = json.loads(files.meta.read_text().splitlines()[0])
    assert {"parent_asin", "title", "main_category", "categories", "store", "price", "average_rating",
            "rating_number", "description", "details"} <= set(product)
    assert files.n_products == SPEC.n_products and files.n_users == SPEC.n_users


def test_users_concentrate_on_their_categories_and_popularity_is_skewed():
    reviews, products = generate_records(SPEC)
    leaf = {p["parent_asin"]: tuple(p["categories"]) for p in products}
    categories = [leaf[r["parent_asin"]] for r in reviews]

    def top3_share(assigned: list[tuple]) -> float:
        """Share of reviews falling in each user's three most reviewed categories."""
        by_user: dict[str, Counter] = defaultdict(Counter)
        for review, category in zip(reviews, assigned, strict=True):
            by_user[review["user_id"]][category] += 1
        return sum(sum(c for _, c in counts.most_common(3)) for counts in by_user.values()) / len(reviews)

    # Against the same reviews with categories shuffled between users (same popularity, no taste).
    shuffled = [categories[i] for i in np.random.default_rng(0).permutation(len(categories))]
    assert top3_share(categories) > top3_share(shuffled) + 0.1
    per_item = sorted(Counter(r["parent_asin"] for r in reviews).values(), reverse=True)
    assert sum(per_item[: len(per_item) // 10]) / len(reviews) > 0.2  # twice the share of a flat catalogue
    assert min(Counter(r["user_id"] for r in reviews).values()) >= SPEC.min_reviews_per_user
    assert len({(r["user_id"], r["parent_asin"]) for r in reviews}) == len(reviews)
