"""``sources.movielens.read_ratings_frame``: MovieLens ratings in their three layouts as one DataFrame, in file
order, with the column names every model reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.common import MOVIELENS_DIR
from rec_orchestration.ml.interactions import ITEM_ID, TIMESTAMP, USER_ID
from rec_orchestration.sources.movielens import read_ratings_frame
from rec_orchestration.sources.records import InvalidFileError

COLUMNS = [USER_ID, ITEM_ID, "rating", TIMESTAMP]
ML_100K = MOVIELENS_DIR / "ml-100k" / "u.data"  # where the benchmarks read it

# Deliberately not sorted by user, item or time: the frame must keep this order.
ROWS = [(196, 242, 3.0, 881250949), (22, 377, 1.0, 878887116), (196, 51, 2.0, 881250949),
        (1000001, 7, 5.0, 1700000000)]
LAYOUTS = {
    "u.data": ("", "\t"),
    "ratings.dat": ("", "::"),
    "ratings.csv": ("userId,movieId,rating,timestamp\n", ","),
}


def write(directory: Path, name: str, rows: list[tuple] = ROWS) -> Path:
    header, separator = LAYOUTS[name]
    path = directory / name
    stars = "{:g}" if name != "ratings.csv" else "{}"  # u.data and .dat: whole stars; latest: 3.0, 4.5
    path.write_text(header + "".join(
        separator.join([str(user), str(item), stars.format(rating), str(ts)]) + "\n"
        for user, item, rating, ts in rows))
    return path


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_layout_gives_the_same_frame_in_file_order(tmp_path: Path, name: str):
    frame = read_ratings_frame(write(tmp_path, name))

    assert list(frame.columns) == COLUMNS
    assert frame.dtypes.to_dict() == {USER_ID: np.int64, ITEM_ID: np.int64, "rating": np.float64,
                                      TIMESTAMP: np.int64}
    assert list(frame.itertuples(index=False, name=None)) == ROWS
    assert list(frame.index) == list(range(len(ROWS)))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_release_directory_is_read_through_its_ratings_file(tmp_path: Path, name: str):
    write(tmp_path, name)
    (tmp_path / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995||http://x|0\n")  # other files are ignored

    assert list(read_ratings_frame(tmp_path).itertuples(index=False, name=None)) == ROWS
    assert list(read_ratings_frame(str(tmp_path)).itertuples(index=False, name=None)) == ROWS


def test_half_stars_of_the_latest_layout_are_kept(tmp_path: Path):
    rows = [(1, 296, 5.0, 1147880044), (1, 306, 3.5, 1147868817), (2, 1, 0.5, 1147868828)]
    frame = read_ratings_frame(write(tmp_path, "ratings.csv", rows))

    assert frame["rating"].tolist() == [5.0, 3.5, 0.5]


def test_a_csv_without_the_ratings_header_is_refused(tmp_path: Path):
    path = tmp_path / "ratings.csv"
    path.write_text("1,296,5.0,1147880044\n")

    with pytest.raises(InvalidFileError, match="header"):
        read_ratings_frame(path)


def test_a_directory_without_a_ratings_file_is_refused(tmp_path: Path):
    (tmp_path / "u.item").write_text("1|Toy Story (1995)\n")

    with pytest.raises(FileNotFoundError, match="u.data"):
        read_ratings_frame(tmp_path)


@pytest.mark.skipif(not ML_100K.is_file(), reason=f"MovieLens 100K is not at {ML_100K} on this machine")
def test_movielens_100k_as_published():
    frame = read_ratings_frame(ML_100K)

    assert len(frame) == 100_000
    assert frame[USER_ID].nunique() == 943
    assert frame[ITEM_ID].nunique() == 1682
    assert frame.iloc[0].tolist() == [196, 242, 3, 881250949]  # the file's first line
    assert set(frame["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
