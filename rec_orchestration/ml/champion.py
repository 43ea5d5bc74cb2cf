"""The champion rule: which evaluated model the pipeline publishes, and when it may not publish one.

There are two popularity baselines (``registry.BASELINE_NAMES``): ``popularity``, decayed with a 90-day
half-life, and ``popularity_plain``, plain most-popular. Either can be the stronger one: decay wins where
popularity shifts, and on data spanning years a short half-life throws away most of the signal (on a
held-out MovieLens set the decayed one measured about half the nDCG of plain most-popular). So the gate
compares with whichever of the two has the higher nDCG@k on the shared held-out split
(:func:`stronger_baseline`; a tie goes to ``popularity``), and that one is also the cold-start fallback.

The champion is the model other than the baselines with the highest nDCG@k on that split (only when
nothing but baselines was evaluated is it the stronger baseline, never publishable). It is publishable only
when it beats the stronger baseline's nDCG@k by more than ``min_lift`` (0.05 = 5 %): a model that beats
only the weaker baseline is refused, and so is one that beats neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rec_orchestration.ml.registry import BASELINE_NAMES

BASELINES: tuple[str, ...] = BASELINE_NAMES
# The baseline of champions recorded before there were two (their ml.model_champions rows say so).
DEFAULT_BASELINE = "popularity"


class ChampionRefused(RuntimeError):
    """There is no champion that may be published."""


@dataclass(frozen=True)
class ChampionChoice:
    model_name: str
    model_version: str
    ndcg: float
    baseline_name: str       # the popularity baseline compared with: the stronger on the holdout
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


def stronger_baseline(manifests: Mapping[str, Mapping[str, Any]], k: int) -> str:
    """The popularity baseline with the higher nDCG@k among ``manifests`` (name -> manifest with
    ``metrics``), which must hold every baseline; a tie goes to the first of :data:`BASELINES`."""
    missing = [name for name in BASELINES if name not in manifests]
    if missing:
        raise ValueError(f"the baselines {', '.join(map(repr, missing))} must be among the evaluated models "
                         f"(every one of {', '.join(BASELINES)})")
    key = f"ndcg@{k}"
    return max(BASELINES, key=lambda name: (float(manifests[name]["metrics"][key]), -BASELINES.index(name)))


def choose_champion(manifests: Mapping[str, Mapping[str, Any]], k: int, min_lift: float = 0.0) -> ChampionChoice:
    """The champion among the evaluated models (name -> manifest with ``version`` and ``metrics``), compared
    with the stronger popularity baseline."""
    if min_lift < 0:
        raise ValueError("min_lift must not be negative")
    baseline = stronger_baseline(manifests, k)
    key = f"ndcg@{k}"
    candidates = [name for name in manifests if name not in BASELINES] or [baseline]
    best = max(candidates, key=lambda name: manifests[name]["metrics"][key])  # a tie: the first evaluated
    ndcg = float(manifests[best]["metrics"][key])
    baseline_ndcg = float(manifests[baseline]["metrics"][key])
    return ChampionChoice(model_name=best, model_version=manifests[best]["version"], ndcg=ndcg,
                          baseline_name=baseline, baseline_version=manifests[baseline]["version"],
                          baseline_ndcg=baseline_ndcg, required_lift=min_lift,
                          beats_baseline=best not in BASELINES and ndcg > baseline_ndcg * (1.0 + min_lift))


def approved(row: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A recorded champion (a row of ``ml.model_champions``) if it may be published; raises otherwise."""
    if row is None:
        raise ChampionRefused("no champion model yet: materialize ml/model_evaluations first")
    if not row["beats_baseline"]:
        baseline = row.get("baseline_name") or DEFAULT_BASELINE
        raise ChampionRefused(
            f"the latest champion, {row['model_name']} {row['model_version']} (nDCG@{row['k']} "
            f"{row['ndcg_at_k']:.4f}), does not beat the stronger popularity baseline, {baseline} (nDCG@{row['k']} "
            f"{row['baseline_ndcg_at_k']:.4f}, required lift {row['required_lift']}): not publishing it; "
            "the live recommendations stay as they are")
    return row
