"""Popularity: the documented time-decayed score, the plain (undecayed) variant, exclusion of seen items, and a
safe round trip of both."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rec_orchestration.ml import registry
from rec_orchestration.ml.artifacts import ModelStore, artifact_version
from rec_orchestration.ml.interactions import Interactions
from rec_orchestration.ml.popularity import PopularityRecommender

DAY = 86_400


def interactions() -> Interactions:
    return Interactions.from_frame(pd.DataFrame({
        "user_id": [1, 1, 2, 3, 3, 3],
        "product_id": [10, 11, 10, 12, 11, 10],
        "weight": [1.0, 1.0, 1.0, 1.0, 1.0, 0.5],
        "ts": [0, 0, 0, 0, 0, 90 * DAY],
    }))


def test_scores_halve_every_half_life_from_the_newest_interaction():
    items, scores = PopularityRecommender(half_life_days=90).fit(interactions()).ranking()
    # item 10: two interactions 90 days old (0.5 each) + one new with weight 0.5 -> 1.5
    assert items.tolist() == [10, 11, 12]
    assert scores.tolist() == pytest.approx([1.5, 1.0, 0.5])


def test_plain_popularity_counts_every_interaction_at_its_weight():
    model = registry.build("popularity_plain").fit(interactions())
    assert isinstance(model, PopularityRecommender) and model.params == {"half_life_days": None}
    items, scores = model.ranking()
    # item 10: 1 + 1 + 0.5, item 11: 1 + 1, item 12: 1; the age of an interaction does not matter
    assert items.tolist() == [10, 11, 12]
    assert scores.tolist() == pytest.approx([2.5, 2.0, 1.0])
    # Decayed with a short half-life, the 90-day-old interactions count next to nothing.
    decayed = PopularityRecommender(half_life_days=1).fit(interactions())
    assert decayed.ranking()[1].tolist() == pytest.approx([0.5, 0.0, 0.0], abs=1e-20)
    with pytest.raises(ValueError, match="positive"):
        PopularityRecommender(half_life_days=0)


def test_recommend_skips_what_each_user_has_seen():
    data = interactions()
    model = PopularityRecommender().fit(data)
    recs = model.recommend(np.array([1, 2, 3, 4]), k=2, exclude=data.items_by_user())
    assert [r.tolist() for r in recs.items] == [[12], [11, 12], [], [10, 11]]
    rows = recs.to_rows()
    assert rows[0] == (1, 12, 1, pytest.approx(0.5))
    assert all(type(value) is int for row in rows for value in row[:3])


def test_state_dict_round_trips_through_the_model_store(tmp_path):
    model = PopularityRecommender(half_life_days=30).fit(interactions())
    store = ModelStore(str(tmp_path))
    version = artifact_version("data-1", {"half_life_days": 30}, "code-1")
    assert version != artifact_version("data-2", {"half_life_days": 30}, "code-1")
    store.save(model.name, version, model.state_dict(), {"note": "test"})
    assert store.exists(model.name, version)
    state, manifest = store.load(model.name, version)
    restored = PopularityRecommender.from_state_dict(state)
    assert manifest["version"] == version and restored.half_life_days == 30
    np.testing.assert_array_equal(restored.ranking()[0], model.ranking()[0])
    np.testing.assert_allclose(restored.ranking()[1], model.ranking()[1])


def test_plain_state_dict_round_trips_without_decay(tmp_path):
    model = PopularityRecommender(half_life_days=None).fit(interactions())
    path = tmp_path / "plain.pt"
    model.save(path)                      # read back with torch.load(weights_only=True)
    restored = PopularityRecommender.load(path)
    assert restored.half_life_days is None
    np.testing.assert_array_equal(restored.ranking()[0], model.ranking()[0])
    np.testing.assert_allclose(restored.ranking()[1], model.ranking()[1])


def test_refuses_to_fit_nothing():
    empty = Interactions.from_frame(pd.DataFrame({"user_id": [], "product_id": [], "weight": [], "ts": []}))
    with pytest.raises(ValueError, match="zero interactions"):
        PopularityRecommender().fit(empty)
