"""Reading rating data: a ratings CSV plus an item-categories CSV.

Any dataset with (user, item, value) feedback rows and a list of categories
per item can calibrate a scenario; `DataFormat` names the files and columns,
and MovieLens is one such format (`MOVIELENS`). Bad input fails here with
the file, the line or column, and what was expected, so nothing downstream
(the fit, the cache) ever sees it.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
from typing import Iterator

import numpy as np

DATA_DIR_VARIABLE = "LERL_DATA_DIR"
MOVIELENS_SOURCE = (
    "MovieLens is published by GroupLens at "
    "https://grouplens.org/datasets/movielens/ (e.g. ml-latest-small); "
    "this project never downloads data")


@dataclasses.dataclass(frozen=True)
class DataFormat:
  """Where the data lives and which columns hold what.

  Attributes:
    ratings_file: the feedback CSV; relative paths start at the data dir.
    categories_file: the item-categories CSV; same convention.
    user_column, item_column, value_column: columns of the ratings file.
    category_item_column, category_column: columns of the categories file.
    category_separator: separates several categories in one field.
    delimiter: the CSV field delimiter of both files.
    no_category_marker: a field value meaning "this item has no category"
      (MovieLens: "(no genres listed)"); such items are left out, with their
      ratings, since satiation and planning need a category. None: every
      item must list a category.
  """

  ratings_file: str
  categories_file: str
  user_column: str = "user"
  item_column: str = "item"
  value_column: str = "rating"
  category_item_column: str = "item"
  category_column: str = "categories"
  category_separator: str = "|"
  delimiter: str = ","
  no_category_marker: str | None = None


MOVIELENS = DataFormat(
    ratings_file="ratings.csv", categories_file="movies.csv",
    user_column="userId", item_column="movieId", value_column="rating",
    category_item_column="movieId", category_column="genres",
    category_separator="|", no_category_marker="(no genres listed)")


@dataclasses.dataclass(frozen=True)
class RatingsData:
  """Ratings re-indexed to 0..n-1, with the items' multi-hot categories.

  Attributes:
    user_ids, item_ids: the original ids, by new index.
    users, items: int32 [R], the new indices of each rating row.
    values: float32 [R], the ratings.
    category_names: categories, most frequent (over items) first.
    item_categories: float32 [I, C] multi-hot, one or more per item.
    uncategorised_items: rated items dropped for having no category.
  """

  user_ids: tuple[str, ...]
  item_ids: tuple[str, ...]
  users: np.ndarray
  items: np.ndarray
  values: np.ndarray
  category_names: tuple[str, ...]
  item_categories: np.ndarray
  uncategorised_items: int = 0

  @property
  def num_ratings(self) -> int:
    return len(self.values)


def resolve_data_dir(data_dir: str | os.PathLike | None,
                     data_format: DataFormat) -> pathlib.Path | None:
  """The data directory: `data_dir`, else $LERL_DATA_DIR, else None."""
  chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_VARIABLE)
  if chosen is None or chosen == "":
    return None
  path = pathlib.Path(chosen).expanduser().resolve()
  if not path.is_dir():
    source = "data_dir" if data_dir is not None else f"${DATA_DIR_VARIABLE}"
    raise FileNotFoundError(
        f"data directory {str(path)!r} (from {source}) does not exist; it "
        f"must hold {needed_files(data_format)}. {MOVIELENS_SOURCE}.")
  return path


def needed_files(data_format: DataFormat) -> str:
  return (f"{data_format.ratings_file} (columns {data_format.user_column}, "
          f"{data_format.item_column}, {data_format.value_column}) and "
          f"{data_format.categories_file} (columns "
          f"{data_format.category_item_column}, {data_format.category_column})")


def data_paths(data_format: DataFormat,
               data_dir: pathlib.Path | None) -> tuple[pathlib.Path, pathlib.Path]:
  """Absolute paths of the two files; a missing one is named with the
  columns it needs and where MovieLens comes from."""
  paths = []
  for name in (data_format.ratings_file, data_format.categories_file):
    path = pathlib.Path(name).expanduser()
    if not path.is_absolute():
      if data_dir is None:
        raise FileNotFoundError(
            f"no data directory for {name!r}: pass data_dir=... or set "
            f"${DATA_DIR_VARIABLE} to a directory holding "
            f"{needed_files(data_format)}. {MOVIELENS_SOURCE}.")
      path = data_dir / path
    if not path.is_file():
      raise FileNotFoundError(
          f"{path}: file not found; expected {needed_files(data_format)}"
          f"{'' if data_dir is None else f' in {data_dir}'}. "
          f"{MOVIELENS_SOURCE}.")
    paths.append(path.resolve())
  return paths[0], paths[1]


def _rows(path: pathlib.Path, delimiter: str,
          columns: dict[str, str]) -> Iterator[tuple[int, list[str]]]:
  """Yields (line number, wanted fields) of each data row.

  Args:
    columns: {role: column name}, e.g. {"user": "userId"}; a missing column
      is reported with the override (`<role>_column`) that renames it.
  """
  try:
    with open(path, newline="", encoding="utf-8-sig") as stream:
      reader = csv.reader(stream, delimiter=delimiter)
      header = [name.strip() for name in next(reader, [])]
      if not header:
        raise ValueError(f"{path}: empty file; expected a header row with "
                         f"columns {list(columns.values())}")
      positions = []
      for role, name in columns.items():
        if name not in header:
          raise ValueError(
              f"{path}, line 1 (header): no column {name!r} for the {role}; "
              f"found columns {header}. Set {role}_column=... to the right "
              f"name (or the delimiter, now {delimiter!r}).")
        positions.append(header.index(name))
      width = max(positions) + 1
      for row in reader:
        if not row:
          continue
        if len(row) < width:
          raise ValueError(
              f"{path}, line {reader.line_num}: {len(row)} field(s); expected "
              f"at least {width} (columns {list(columns.values())})")
        yield reader.line_num, [row[p].strip() for p in positions]
  except UnicodeDecodeError as error:
    raise ValueError(f"{path}: not UTF-8 text ({error})") from None


def read_categories(path: pathlib.Path, data_format: DataFormat
                    ) -> tuple[dict[str, tuple[str, ...]], set[str]]:
  """Returns {item id: its categories} and the ids marked uncategorised."""
  f = data_format
  categories: dict[str, tuple[str, ...]] = {}
  uncategorised: set[str] = set()
  first_line: dict[str, int] = {}
  rows = _rows(path, f.delimiter, {"category_item": f.category_item_column,
                                   "category": f.category_column})
  for line, (item, field) in rows:
    if not item:
      raise ValueError(f"{path}, line {line}, column "
                       f"{f.category_item_column!r}: empty item id")
    if item in first_line:
      raise ValueError(
          f"{path}, line {line}: item {item!r} is listed again (first on "
          f"line {first_line[item]}); expected one row per item")
    first_line[item] = line
    if f.no_category_marker is not None and field == f.no_category_marker:
      uncategorised.add(item)
      continue
    parts = tuple(part.strip() for part in field.split(f.category_separator))
    if not all(parts):
      problem = ("empty category list" if not field else
                 f"empty category name in {field!r}")
      marker = ("" if f.no_category_marker is None else
                f", or {f.no_category_marker!r} for none")
      raise ValueError(
          f"{path}, line {line}, column {f.category_column!r}: {problem} for "
          f"item {item!r}; expected one or more category names separated by "
          f"{f.category_separator!r}{marker}")
    categories[item] = tuple(dict.fromkeys(parts))
  return categories, uncategorised


def read_ratings(ratings_path: pathlib.Path, categories_path: pathlib.Path,
                 data_format: DataFormat) -> RatingsData:
  """Reads both files; every rated item must appear in the categories file.

  Items listed only in the categories file (never rated) are ignored;
  repeated (user, item) rows count as separate observations.
  """
  f = data_format
  item_categories, uncategorised = read_categories(categories_path, f)
  user_index: dict[str, int] = {}
  item_index: dict[str, int] = {}
  users: list[int] = []
  items: list[int] = []
  values: list[float] = []
  dropped: set[str] = set()
  rows = _rows(ratings_path, f.delimiter, {
      "user": f.user_column, "item": f.item_column, "value": f.value_column})
  for line, (user, item, text) in rows:
    for column, identifier in ((f.user_column, user), (f.item_column, item)):
      if not identifier:
        raise ValueError(
            f"{ratings_path}, line {line}, column {column!r}: empty id")
    try:
      value = float(text)
    except ValueError:
      value = float("nan")
    if not np.isfinite(value):
      raise ValueError(
          f"{ratings_path}, line {line}, column {f.value_column!r}: {text!r} "
          "is not a rating; expected a finite number")
    if item not in item_index:
      if item in uncategorised:
        dropped.add(item)
        continue
      if item not in item_categories:
        raise ValueError(
            f"{ratings_path}, line {line}: item {item!r} is unknown to "
            f"{categories_path} (column {f.category_item_column!r}); every "
            "rated item needs a row with its categories")
      item_index[item] = len(item_index)
    users.append(user_index.setdefault(user, len(user_index)))
    items.append(item_index[item])
    values.append(value)
  if not values:
    raise ValueError(f"{ratings_path}: no ratings of categorised items; "
                     f"expected rows with columns {f.user_column}, "
                     f"{f.item_column}, {f.value_column}")
  item_ids = tuple(item_index)
  names, multi_hot = _multi_hot([item_categories[item] for item in item_ids])
  return RatingsData(
      user_ids=tuple(user_index), item_ids=item_ids,
      users=np.asarray(users, np.int32), items=np.asarray(items, np.int32),
      values=np.asarray(values, np.float32), category_names=names,
      item_categories=multi_hot, uncategorised_items=len(dropped))


def _multi_hot(item_categories: list[tuple[str, ...]]
               ) -> tuple[tuple[str, ...], np.ndarray]:
  """Category names (most items first, then by name) and the [I, C] table."""
  counts: dict[str, int] = {}
  for names in item_categories:
    for name in names:
      counts[name] = counts.get(name, 0) + 1
  ordered = tuple(sorted(counts, key=lambda name: (-counts[name], name)))
  column = {name: c for c, name in enumerate(ordered)}
  table = np.zeros((len(item_categories), len(ordered)), np.float32)
  for i, names in enumerate(item_categories):
    table[i, [column[name] for name in names]] = 1.0
  return ordered, table


def filter_min_counts(data: RatingsData, min_user_ratings: int,
                      min_item_ratings: int, source: str) -> RatingsData:
  """Keeps users and items with enough ratings among each other.

  Dropping items can push users under their threshold and back, so the two
  filters repeat until both hold (a k-core); survivors are re-indexed, and
  categories no kept item has are dropped.
  """
  keep = np.ones(data.num_ratings, bool)
  while True:
    user_counts = np.bincount(data.users[keep], minlength=len(data.user_ids))
    item_counts = np.bincount(data.items[keep], minlength=len(data.item_ids))
    still = (keep & (user_counts[data.users] >= min_user_ratings) &
             (item_counts[data.items] >= min_item_ratings))
    if still.sum() == keep.sum():
      break
    keep = still
  if not keep.any():
    all_users = np.bincount(data.users)
    all_items = np.bincount(data.items)
    raise ValueError(
        f"{source}: no ratings are left after filtering to users with >= "
        f"{min_user_ratings} and items with >= {min_item_ratings} ratings "
        f"(before: {len(data.user_ids)} users, at most {all_users.max()} "
        f"ratings each; {len(data.item_ids)} items, at most "
        f"{all_items.max()} ratings each); lower min_user_ratings or "
        "min_item_ratings")
  kept_users = np.flatnonzero(np.bincount(data.users[keep],
                                          minlength=len(data.user_ids)))
  kept_items = np.flatnonzero(np.bincount(data.items[keep],
                                          minlength=len(data.item_ids)))
  new_user = np.full(len(data.user_ids), -1, np.int32)
  new_user[kept_users] = np.arange(len(kept_users))
  new_item = np.full(len(data.item_ids), -1, np.int32)
  new_item[kept_items] = np.arange(len(kept_items))
  categories = data.item_categories[kept_items]
  used = categories.sum(axis=0) > 0
  return RatingsData(
      user_ids=tuple(data.user_ids[u] for u in kept_users),
      item_ids=tuple(data.item_ids[i] for i in kept_items),
      users=new_user[data.users[keep]], items=new_item[data.items[keep]],
      values=data.values[keep],
      category_names=tuple(n for n, u in zip(data.category_names, used) if u),
      item_categories=categories[:, used],
      uncategorised_items=data.uncategorised_items)
