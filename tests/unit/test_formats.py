"""Every landing format: detection, and the canonical rows its reader produces (real files where we have them)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rec_orchestration.settings import PROJECT_ROOT
from rec_orchestration.sources.formats import UnknownFormatError, detect, plan
from rec_orchestration.sources.records import InvalidFileError, Rejected

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
ML_100K = SHARED_DATA / "movielens" / "ml-100k"
AMAZON_2014 = SHARED_DATA / "amazon" / "Musical_Instruments_5.json.gz"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def rows(source) -> list:
    return list(source.format.read(source.path, NOW))


def canonical(items: list) -> list[tuple]:
    """Rows without line number and CRC; rejects as (line, reason)."""
    return [(r.line_number, r.reason) if isinstance(r, Rejected) else r[2:] for r in items]


def test_movielens_100k_folder_is_one_entry_with_ratings_movies_and_users():
    landing = plan(ML_100K)
    formats = {s.path.name: s.format.name for s in landing.files}
    assert formats == {"u.data": "movielens_100k_ratings", "u.item": "movielens_100k_movies",
                       "u.user": "movielens_100k_users"}
    # ua/ub splits repeat u.data and must not be loaded twice; docs are not data.
    assert {p.name for p in landing.ignored} == {"README", "u.genre", "u.info", "u.occupation", "ua.base", "ua.test"}
    by_name = {s.path.name: s for s in landing.files}

    ratings = rows(by_name["u.data"])
    assert len(ratings) == 100_000 and not any(isinstance(r, Rejected) for r in ratings)
    assert ratings[0][2:] == ("196", "242", None, Decimal(3), "rating",
                              datetime.fromtimestamp(881250949, UTC), None, None, None, None)
    assert len({r[2] for r in ratings}) == 943 and len({r[3] for r in ratings}) == 1682

    movies = rows(by_name["u.item"])
    assert len(movies) == 1682
    toy_story = movies[0]
    assert toy_story[2:8] == ("1", "Toy Story (1995)", None, "Animation", ["Animation", "Children's", "Comedy"], None)
    assert toy_story[11].obj == {"release_date": "1995-01-01", "year": "1995",
                                 "imdb_url": "http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)"}
    assert any("é" in (m[3] or "") for m in movies)  # Latin-1 titles decode (e.g. "Misérables")

    users = rows(by_name["u.user"])
    assert len(users) == 943
    assert users[0][2:] == ("1", 24, "M", "technician", "85711")


def test_amazon_2014_reviews_are_detected_by_their_keys_and_read_whole():
    fmt = detect(AMAZON_2014)
    assert fmt is not None and fmt.name == "amazon2014_reviews"
    out = list(fmt.read(AMAZON_2014, NOW))
    assert len(out) == 10_261 and not any(isinstance(r, Rejected) for r in out)
    first = out[0]
    assert first[2:4] == ("A2IBPI20UZIR0U", "1384719342") and first[5] == Decimal(5)
    assert first[6] == "review" and first[10] == 0  # helpful [0, 0]
    assert len({r[2] for r in out}) == 1429 and len({r[3] for r in out}) == 900


def test_movielens_1m_and_10m_dat_files(tmp_path: Path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_bytes(b"1::1193::5::978300760\n1::661::3.5::978302109\n2::3068::0::978299000\n")
    (folder / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n"
                                        "2::Misérables, Les (1995)::Drama\n".encode("latin-1"))
    (folder / "users.dat").write_bytes(b"1::F::1::10::48067\n2::M::56::16::70072\n3::M::99::16::55117\n")
    (folder / "README").write_text("MovieLens 1M")
    by_name = {s.path.name: s for s in plan(folder).files}
    assert canonical(rows(by_name["ratings.dat"])) == [
        ("1", "1193", None, Decimal(5), "rating", datetime.fromtimestamp(978300760, UTC), None, None, None, None),
        ("1", "661", None, Decimal("3.5"), "rating", datetime.fromtimestamp(978302109, UTC), None, None, None, None),
        (3, "rating '0' outside 0.5-5"),
    ]
    movies = rows(by_name["movies.dat"])
    assert movies[1][3] == "Misérables, Les (1995)" and movies[1][6] == ["Drama"]
    assert canonical(rows(by_name["users.dat"])) == [
        ("1", 1, "F", "K-12 student", "48067"), ("2", 56, "M", "self-employed", "70072"),
        (3, "age group '99' is not one of (1, 18, 25, 35, 45, 50, 56)")]


def test_movielens_latest_csv_with_half_stars_and_quoted_titles(tmp_path: Path):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,0.5,964981247\n1,6,4.25,964982224\n")
    movies = tmp_path / "movies.csv"
    movies.write_text('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
                      '11,"American President, The (1995)",Comedy|Drama|Romance\n3,Nothing (2001),(no genres listed)\n')
    assert detect(ratings).name == "movielens_csv_ratings" and detect(movies).name == "movielens_csv_movies"
    out = canonical(list(detect(ratings).read(ratings, NOW)))
    assert [r[3] for r in out[:2]] == [Decimal("4.0"), Decimal("0.5")]
    assert out[2] == (4, "rating '4.25' is not a whole or half star")
    titles = [(r[1], r[4]) for r in canonical(list(detect(movies).read(movies, NOW)))]
    assert titles == [("Toy Story (1995)", ["Adventure", "Animation"]),
                      ("American President, The (1995)", ["Comedy", "Drama", "Romance"]), ("Nothing (2001)", [])]


def test_movielens_csv_with_a_wrong_header_fails_as_a_whole(tmp_path: Path):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    fmt = detect(ratings)
    ratings.write_text("userId,movieId,stars,timestamp\n1,1,4.0,964982703\n")
    with pytest.raises(InvalidFileError, match="expected the header"):
        list(fmt.read(ratings, NOW))


EVENTS_CSV = """user_id,item_id,event_type,value,timestamp,quantity,price
u1,i1,view,,1700000000,,
u1,i1,purchase,,2023-11-14T22:13:20Z,2,19.99
u2,i9,rating,4.5,1700000000000,,
u2,i9,like,,2023-11-14 22:13:20,,
u3,i2,share,,1700000000,,
u3,i2,purchase,,1700000000,0,5
"""


def test_generic_events_csv_and_parquet_give_the_same_rows(tmp_path: Path):
    csv_path = tmp_path / "events.csv"
    csv_path.write_text(EVENTS_CSV)
    assert detect(csv_path).name == "events_csv"
    ts = datetime.fromtimestamp(1_700_000_000, UTC)
    expected = [
        ("u1", "i1", "view", None, ts, None, None),
        ("u1", "i1", "purchase", None, ts, 2, Decimal("19.99")),
        ("u2", "i9", "rating", Decimal("4.5"), ts, None, None),
        ("u2", "i9", "like", None, ts, None, None),
        (6, "unknown event_type 'share' (expected one of view, click, like, purchase, rating)"),
        (7, "quantity '0' is not a positive whole number"),
    ]
    assert canonical(list(detect(csv_path).read(csv_path, NOW))) == expected

    table = pa.table({
        "user_id": ["u1", "u1", "u2", "u2", "u3", "u3"], "item_id": ["i1", "i1", "i9", "i9", "i2", "i2"],
        "event_type": ["view", "purchase", "rating", "like", "share", "purchase"],
        "value": [None, None, 4.5, None, None, None],
        "timestamp": [ts, ts, ts, ts, ts, ts], "quantity": [None, 2, None, None, None, 0],
        "price": [None, 19.99, None, None, None, 5.0],
    })
    parquet = tmp_path / "events.parquet"
    pq.write_table(table, parquet)
    out = canonical(list(detect(parquet).read(parquet, NOW)))
    assert out[:4] == [r if i != 2 else ("u2", "i9", "rating", Decimal("4.5"), ts, None, None)
                       for i, r in enumerate(expected[:4])]
    assert [r[0] for r in out[4:]] == [5, 6]  # Parquet "line" = row number


def test_parquet_written_by_pandas_with_null_ids_and_an_index(tmp_path: Path):
    import pandas as pd

    frame = pd.DataFrame({"user_id": [1, None, 3], "item_id": [10, 20, None], "event_type": ["view"] * 3,
                          "value": [None] * 3, "timestamp": [1_700_000_000] * 3}, index=[5, 6, 7])
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)  # float64 ids (NULLs) and an __index_level_0__ column
    out = canonical(list(detect(path).read(path, NOW)))
    assert out[0][:3] == ("1", "10", "view")
    assert out[1:] == [(2, "missing user_id"), (3, "missing item_id")]


def test_events_with_missing_or_unknown_columns_fail_naming_them(tmp_path: Path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,event_type,timestamp,colour\nu1,i1,view,1700000000,red\n")
    with pytest.raises(InvalidFileError, match="missing column\\(s\\) value; unknown column\\(s\\) colour"):
        list(detect(path).read(path, NOW))


def test_detection_by_name_content_and_extension(tmp_path: Path):
    def make(name: str, content: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
        return path

    assert detect(make("Beauty.jsonl.gz", b'{"user_id": "u", "parent_asin": "p", "rating": 5}\n')).name == \
        "amazon2023_reviews"
    assert detect(make("meta_Beauty.jsonl", b'{"parent_asin": "p"}\n')).name == "amazon2023_products"
    assert detect(make("old.json", b'not json\n{"reviewerID": "r", "asin": "a", "overall": 5}\n')).name == \
        "amazon2014_reviews"
    assert detect(make("u.data", b"1\t2\t3\t881250949\n")).name == "movielens_100k_ratings"
    assert detect(make("empty.csv", b"")).name == "events_csv"
    # 2014-style metadata is Python literals, not JSON: not mistaken for Amazon 2023 products.
    assert detect(make("meta_Books.json.gz", b"{'asin': '0001', 'title': 'A book'}\n")) is None
    assert detect(make("notes.txt", b"hello")) is None
    with pytest.raises(UnknownFormatError, match="notes.txt: unknown landing file format"):
        plan(tmp_path / "notes.txt")
    assert plan(tmp_path / "notes.txt", "events_csv").files[0].format.name == "events_csv"  # named in config
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README").write_text("x")
    with pytest.raises(UnknownFormatError, match="no file in this folder has a known format"):
        plan(tmp_path / "docs")
