"""The champion rule: which evaluated model the pipeline publishes, and when it may not publish one.

The champion is the model with the highest nDCG@k on the shared held-out split (a tie goes to a model
other than the baseline). It is publishable only when it is not the popularity baseline and beats the
baseline's nDCG@k by more than ``min_lift`` (0.05 = 5 %).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BASELINE = "popularity"


class ChampionRefused(RuntimeError):
    """There is no champion that may be published."""


@dataclass(frozen=True)
class ChampionChoice:
    model_name: str
    model_version: str
    ndcg: float
    baseline_version: str
    baseline_ndcg: float
    required_lift: float
    beats_baseline: bool


def require_same_data(manifests: Mapping[str, Mapping[str, Any]]) -> None:
    """Metrics only compare when every model was fitted on the same data: raise otherwise."""
    data_versions = {manifest["data_version"] for manifest in manifests.values()}
    if len(data_versions) > 1:
        raise ValueError("the models' latest artifacts were fitted on different data; materialize the models "
                         f"together so their metrics compare: {sorted(data_versions)}")


def choose_champion(manifests: Mapping[str, Mapping[str, Any]], k: int, min_lift: float = 0.0) -> ChampionChoice:
    """The champion among the evaluated models (name -> manifest with ``version`` and ``metrics``)."""
    if BASELINE not in manifests:
        raise ValueError(f"the baseline {BASELINE!r} must be among the evaluated models")
    if min_lift < 0:
        raise ValueError("min_lift must not be negative")
    key = f"ndcg@{k}"
    best = max(manifests, key=lambda name: (manifests[name]["metrics"][key], name != BASELINE))
    ndcg = float(manifests[best]["metrics"][key])
    baseline_ndcg = float(manifests[BASELINE]["metrics"][key])
    return ChampionChoice(model_name=best, model_version=manifests[best]["version"], ndcg=ndcg,
                          baseline_version=manifests[BASELINE]["version"], baseline_ndcg=baseline_ndcg,
                          required_lift=min_lift,
                          beats_baseline=best != BASELINE and ndcg > baseline_ndcg * (1.0 + min_lift))


def approved(row: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A recorded champion (a row of ``ml.model_champions``) if it may be published; raises otherwise."""
    if row is None:
        raise ChampionRefused("no champion model yet: materialize ml/model_evaluations first")
    if not row["beats_baseline"]:
        raise ChampionRefused(
            f"the latest champion, {row['model_name']} {row['model_version']} (nDCG@{row['k']} "
            f"{row['ndcg_at_k']:.4f}), does not beat popularity ({row['baseline_ndcg_at_k']:.4f}, required lift "
            f"{row['required_lift']}): not publishing it; the live recommendations stay as they are")
    return row
