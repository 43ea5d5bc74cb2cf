"""The thread budget: each step's share of the cores, applied to torch, BLAS and LightFM in one place."""


import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from rec_orchestration import threads


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.delenv("REC_STEP_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)


def test_a_step_gets_its_share_of_the_cores(two_cores, monkeypatch):
    assert threads.step_threads("in_process") == 2       # the only step running: every core
    assert threads.step_threads("multiprocess") == 1     # model steps side by side: one core each
    monkeypatch.setattr(threads, "usable_cores", lambda: 16)
    assert threads.step_threads("multiprocess") == 3     # 16 cores over the 5 model steps
    assert threads.step_threads("in_process") == 16
    monkeypatch.setenv("REC_EXECUTOR", "in_process")
    assert threads.step_threads() == 16                  # REC_EXECUTOR's executor when none is named


def test_a_step_that_runs_alone_at_its_level_takes_every_core(two_cores, monkeypatch):
    """The scoring shards run by themselves: one shard gets both cores, two get one each."""
    assert threads.step_threads("multiprocess", width=1) == 2
    assert threads.step_threads("multiprocess", width=2) == 1
    monkeypatch.setattr(threads, "usable_cores", lambda: 16)
    assert threads.step_threads("multiprocess", width=4) == 4
    monkeypatch.setenv("REC_STEP_THREADS", "1")          # an explicit budget still wins
    assert threads.step_threads("multiprocess", width=1) == 1


def test_an_explicit_budget_wins(two_cores, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")           # what dask's nanny gives each worker process
    assert threads.step_threads("in_process") == 1
    monkeypatch.setenv("REC_STEP_THREADS", "3")
    assert threads.step_threads("multiprocess") == 3
    monkeypatch.setenv("REC_STEP_THREADS", "0")
    with pytest.raises(ValueError, match="REC_STEP_THREADS=0"):
        threads.step_threads()


def blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_limited_holds_torch_and_blas_then_restores_them(two_cores):
    np.ones((2, 2)) @ np.ones((2, 2))  # BLAS loaded
    torch_before, blas_before = torch.get_num_threads(), blas_threads()
    with threads.limited(1) as budget:
        assert budget == 1
        assert torch.get_num_threads() == 1
        assert blas_threads() == {1}
    assert torch.get_num_threads() == torch_before
    assert blas_threads() == blas_before


def test_model_fits_record_the_threads_they_ran_with(two_cores, monkeypatch, tmp_path):
    """A step's effective thread count: the model fit runs inside the budget and its manifest says so;
    LightFM takes the budget as its num_threads."""
    import pandas as pd

    from rec_orchestration.ml.artifacts import ModelStore
    from rec_orchestration.ml.factorization import LightFMRecommender
    from rec_orchestration.ml.training import fit_and_evaluate, training_split

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": rng.integers(0, 40, 600), "product_id": rng.integers(0, 30, 600),
                          "weight": 1.0, "ts": pd.Timestamp("2024-01-01", tz="UTC")
                          + pd.to_timedelta(rng.integers(0, 10**6, 600), unit="s")})
    frame = frame.drop_duplicates(["user_id", "product_id"]).sort_values(["user_id", "ts"]).reset_index(drop=True)
    monkeypatch.setenv("REC_EXECUTOR", "multiprocess")
    seen = []
    original = LightFMRecommender.fit

    def watched(self, interactions):
        result = original(self, interactions)
        seen.append((self._threads, torch.get_num_threads(), blas_threads()))
        return result

    monkeypatch.setattr(LightFMRecommender, "fit", watched)
    manifest, _ = fit_and_evaluate("lightfm", {"factors": 4, "epochs": 2}, training_split(frame),
                                   ModelStore(str(tmp_path)))
    assert manifest["threads"] == 1
    assert seen == [(1, 1, {1})]
