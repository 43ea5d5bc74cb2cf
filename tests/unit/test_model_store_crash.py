"""A process killed while it saves a model artifact (weights written, manifest not yet) leaves nothing that
counts as an artifact, and the next save of the same version completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from rec_orchestration.failpoints import VARIABLE
from rec_orchestration.ml.artifacts import ModelStore

SAVE = """
import sys, torch
from rec_orchestration.ml.artifacts import ModelStore
ModelStore(sys.argv[1]).save("itemknn", "v1", {"w": torch.arange(4.0)}, {"metrics": {"ndcg@10": 0.5}})
print("saved")
"""
REPO = Path(__file__).resolve().parents[2]


def test_a_kill_between_weights_and_manifest_leaves_no_artifact_and_the_next_save_completes_it(tmp_path):
    root = tmp_path / "store"
    killed = subprocess.run([sys.executable, "-c", SAVE, str(root)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, VARIABLE: "model_store.before_manifest"}, timeout=120)
    assert killed.returncode == -signal.SIGKILL and "saved" not in killed.stdout
    version_dir = root / "itemknn" / "v1"
    assert (version_dir / "state_dict.pt").exists() and not (version_dir / "manifest.json").exists()
    store = ModelStore(str(root))
    assert not store.exists("itemknn", "v1")  # readers and the reuse check see no artifact

    store.save("itemknn", "v1", {"w": torch.arange(4.0)}, {"metrics": {"ndcg@10": 0.5}})
    state, manifest = store.load("itemknn", "v1")
    assert store.exists("itemknn", "v1") and manifest["metrics"] == {"ndcg@10": 0.5}
    assert torch.equal(state["w"], torch.arange(4.0))
    assert not [p.name for p in version_dir.iterdir() if ".partial-" in p.name]


def test_an_unknown_failpoint_name_is_an_error_not_a_silent_no_op(monkeypatch):
    from rec_orchestration.failpoints import failpoint

    monkeypatch.setenv(VARIABLE, "no.such.point")
    failpoint("some.other.point")  # not the one named: nothing happens
    try:
        failpoint("no.such.point")
    except ValueError as error:
        assert "unknown failpoint" in str(error)
    else:
        raise AssertionError("an unknown failpoint was accepted")
