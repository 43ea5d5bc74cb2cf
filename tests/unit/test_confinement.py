"""Names and paths that would leave the landing directory or the model store are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from rec_orchestration.confinement import OutsideError, no_parent_steps, plain_name, within
from rec_orchestration.ml.artifacts import ModelStore
from rec_orchestration.sources.formats import plan

EVENTS = "user_id,item_id,event_type,value,timestamp\nu1,i1,view,,1690000000\n"


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/etc", "a\\b", "a\0b"])
def test_what_is_not_a_plain_name(name):
    with pytest.raises(OutsideError, match="not a plain"):
        plain_name(name, "landing partition")


def test_plain_names_pass():
    assert plain_name("reviews_2026-12-01.jsonl", "landing partition") == "reviews_2026-12-01.jsonl"
    assert plain_name("..hidden..", "x") == "..hidden.."


def test_parent_steps_and_links_out_are_refused(tmp_path):
    root, outside = tmp_path / "landing", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "inside").mkdir()
    (root / "out").symlink_to(outside)
    (root / "in").symlink_to(root / "inside")
    assert within(root, root / "inside", "entry") == (root / "inside").resolve()
    assert within(root, root / "in", "entry") == (root / "inside").resolve()  # a link that stays inside
    with pytest.raises(OutsideError, match="a symlink"):
        within(root, root / "out", "entry")
    with pytest.raises(OutsideError, match="outside"):
        within(root, root / "inside" / ".." / ".." / "elsewhere", "entry")
    with pytest.raises(OutsideError, match="outside"):
        within(root, Path("/etc"), "entry")
    with pytest.raises(OutsideError, match="contains '..'"):
        no_parent_steps("sub/../../etc", "run config landing_dir")


def test_a_landing_folder_refuses_files_linked_from_outside_and_loads_the_rest(tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text(EVENTS)
    entry = tmp_path / "landing" / "batch"
    entry.mkdir(parents=True)
    (entry / "events.csv").write_text(EVENTS)
    (entry / "stolen.csv").symlink_to(secret)
    landing_plan = plan(entry)
    assert [f.path.name for f in landing_plan.files] == ["events.csv"]
    assert [(path.name, "outside" in reason) for path, reason in landing_plan.refused] == [("stolen.csv", True)]


def test_the_model_store_keeps_artifacts_under_its_root(tmp_path):
    store = ModelStore(str(tmp_path / "store"))
    assert store.location("itemknn", "abc123").startswith(str(tmp_path / "store"))
    for model_name, version in (("..", "v"), ("itemknn", "../../etc"), ("a/b", "v")):
        with pytest.raises(OutsideError):
            store.location(model_name, version)
    with pytest.raises(OutsideError, match="contains '..'"):
        ModelStore(str(tmp_path / "store" / ".." / "other"))

    # A LATEST pointer edited to lead elsewhere is refused, not followed.
    (tmp_path / "store" / "itemknn").mkdir(parents=True)
    (tmp_path / "store" / "itemknn" / "LATEST").write_text("../../../etc")
    with pytest.raises(OutsideError, match="not a plain"):
        store.latest("itemknn")

    # A model folder that is a symlink out of the store is refused.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "store" / "lightfm").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutsideError, match="outside"):
        store.location("lightfm", "abc123")
