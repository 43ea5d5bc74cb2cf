"""Namespaces of landing entries: each format's default family, the ``_namespaces.toml`` mapping file
(exact names and globs, first match wins) and run config over both, and the errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from rec_orchestration.sources.formats import FORMATS, landing_entries
from rec_orchestration.sources.namespaces import (
    NAMESPACES_FILE,
    NamespaceError,
    NamespaceMap,
    entry_namespace,
    parse_namespace_map,
    read_namespace_map,
    validate_namespace,
)


def test_every_format_has_its_family_as_default_namespace():
    assert {name: fmt.family for name, fmt in FORMATS.items()} == {
        "amazon2023_reviews": "amazon2023", "amazon2023_products": "amazon2023",
        "amazon2014_reviews": "amazon2014",
        "movielens_100k_ratings": "movielens_100k", "movielens_100k_movies": "movielens_100k",
        "movielens_100k_users": "movielens_100k",
        "movielens_dat_ratings": "movielens_dat", "movielens_dat_movies": "movielens_dat",
        "movielens_dat_users": "movielens_dat",
        "movielens_csv_ratings": "movielens_csv", "movielens_csv_movies": "movielens_csv",
        "events_csv": "events", "events_parquet": "events",
    }
    for fmt in FORMATS.values():
        assert validate_namespace(fmt.family, fmt.name) == fmt.family


@pytest.mark.parametrize("value", ["movielens", "a", "shop_2", "x" * 40])
def test_valid_namespaces(value):
    assert validate_namespace(value, "somewhere") == value


@pytest.mark.parametrize("value", ["", "MovieLens", "1m", "_x", "ml-1m", "a b", "x" * 41, "é", None, 3])
def test_invalid_namespaces_are_refused_naming_where(value):
    with pytest.raises(NamespaceError, match=r"^somewhere: namespace .* is not valid"):
        validate_namespace(value, "somewhere")


MAPPING = """
# entry name or glob pattern = namespace; the first match wins
"ml-1m" = "movielens"
"ml-latest*" = "movielens"
"shop_events_*.csv" = "shop"
"*.csv" = "other_csv"
"""


def test_exact_names_and_globs_first_match_wins():
    mapping = parse_namespace_map(MAPPING)
    assert mapping.lookup("ml-1m") == "movielens"
    assert mapping.lookup("ml-latest-small") == "movielens"
    assert mapping.lookup("ml-latest") == "movielens"
    assert mapping.lookup("shop_events_2024-01-01.csv") == "shop"  # before "*.csv"
    assert mapping.lookup("clicks.csv") == "other_csv"
    assert mapping.lookup("ml-100k") is None  # no rule: the format's family
    assert mapping.lookup("ML-1M") is None  # names match case-sensitively


def test_a_name_with_glob_characters_matches_itself_exactly():
    mapping = parse_namespace_map('"drop[1].csv" = "drops"')
    assert mapping.lookup("drop[1].csv") == "drops"
    assert mapping.lookup("drop1.csv") == "drops"  # and as a glob


def test_run_config_overrides_the_mapping_file():
    mapping = parse_namespace_map(MAPPING)
    assert entry_namespace("ml-1m", mapping) == "movielens"
    assert entry_namespace("ml-100k", mapping) is None
    assert entry_namespace("ml-1m", mapping, "film_site") == "film_site"
    with pytest.raises(NamespaceError, match="run config namespace: namespace 'Film Site' is not valid"):
        entry_namespace("ml-1m", mapping, "Film Site")


def test_mapping_file_in_the_landing_directory(tmp_path: Path):
    assert read_namespace_map(tmp_path) == NamespaceMap()
    (tmp_path / NAMESPACES_FILE).write_text(MAPPING)
    (tmp_path / "ml-1m").mkdir()
    mapping = read_namespace_map(tmp_path)
    assert mapping.lookup("ml-1m") == "movielens" and mapping.source == tmp_path / NAMESPACES_FILE
    assert [p.name for p in landing_entries(tmp_path)] == ["ml-1m"]  # the mapping file is not an entry


@pytest.mark.parametrize(("text", "message"), [
    ('"ml-1m" = "MovieLens"', r"_namespaces.toml, entry 'ml-1m': namespace 'MovieLens' is not valid"),
    ('"ml-1m" = 3', r"_namespaces.toml: 'ml-1m' must map to a namespace string"),
    ('[ml]\nname = "x"', r"_namespaces.toml: 'ml' must map to a namespace string"),
    ('"ml-1m" = movielens', r"_namespaces.toml: not valid TOML"),
    ('"" = "movielens"', r"_namespaces.toml: an empty entry name or pattern"),
])
def test_a_bad_mapping_file_is_a_clear_error_naming_it(tmp_path: Path, text: str, message: str):
    (tmp_path / NAMESPACES_FILE).write_text(text)
    with pytest.raises(NamespaceError, match=message) as raised:
        read_namespace_map(tmp_path)
    assert str(raised.value).startswith(str(tmp_path / NAMESPACES_FILE))
