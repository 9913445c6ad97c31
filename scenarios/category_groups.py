"""Semantic groups of data categories: from co-occurrence or from a file.

Satiation spills over inside a semantic group, so the groups should join
categories that users experience as alike. Without a curated grouping, the
data itself says which categories go together: genres that often label the
same items (Action and Adventure, Children and Animation) are grouped.
"""

from __future__ import annotations

import csv
import pathlib
from typing import Sequence

import numpy as np
from absl import logging
from scipy.cluster import hierarchy
from scipy.spatial import distance

from lerl_recsim.scenarios import catalogue as catalogue_lib

# Columns of a groups file.
CATEGORY_COLUMN = "category"
GROUP_COLUMN = "group"


def cooccurrence_similarity(item_categories: np.ndarray) -> np.ndarray:
  """Cosine similarity of categories' item sets: n_ab / sqrt(n_a n_b)."""
  counts = item_categories.T.astype(np.float64) @ item_categories
  sizes = np.sqrt(np.diag(counts))
  return counts / np.outer(sizes, sizes)


def cooccurrence_groups(category_names: Sequence[str],
                        item_categories: np.ndarray,
                        num_groups: int) -> catalogue_lib.Catalogue:
  """Average-linkage clustering of 1 − similarity into `num_groups` groups.

  Deterministic (no random start). Only categories that share items, at
  least through a chain of others, are ever grouped: a merge of categories
  that never label one item (distance 1) says nothing about them, so such
  categories stay apart even if that leaves more than `num_groups` groups
  (data whose items carry one category each gives one group per category;
  a groups file can say more). Groups are numbered by their most frequent
  category and named by their members, most frequent first
  (`group_name`). With fewer categories than `num_groups`, each category
  is its own group.
  """
  num_categories = len(category_names)
  if num_categories <= num_groups:
    labels = np.arange(num_categories)
  else:
    dissimilarity = 1.0 - cooccurrence_similarity(item_categories)
    np.fill_diagonal(dissimilarity, 0.0)
    condensed = distance.squareform(np.clip(dissimilarity, 0.0, None),
                                    checks=False)
    clustered = hierarchy.fcluster(
        hierarchy.linkage(condensed, method="average"), t=num_groups,
        criterion="maxclust")
    # Components of the "share an item" graph: groups never span two.
    related = hierarchy.fcluster(
        hierarchy.linkage(condensed, method="single"), t=1.0 - 1e-9,
        criterion="distance")
    labels = np.array([f"{a}.{b}" for a, b in zip(clustered, related)])
    formed = len(set(labels))
    if formed > num_groups:
      logging.warning(
          "co-occurrence formed %d semantic groups of the %d categories, not "
          "%d: categories that never label the same item are not grouped; "
          "a groups file (groups_file) can group them", formed,
          num_categories, num_groups)
  return _catalogue(category_names, item_categories, labels)


def group_name(members: Sequence[str], shown: int = 4) -> str:
  """Members joined by "/", the first `shown` of them and a count of the
  rest: names stay short enough for a prompt."""
  if len(members) <= shown:
    return "/".join(members)
  return "/".join(members[:shown]) + f" +{len(members) - shown} more"


def _catalogue(category_names: Sequence[str], item_categories: np.ndarray,
               labels: Sequence) -> catalogue_lib.Catalogue:
  """Numbers groups by their most frequent category; names them by members."""
  frequency = item_categories.sum(axis=0)
  by_frequency = sorted(range(len(category_names)),
                        key=lambda c: (-frequency[c], category_names[c]))
  group_id: dict = {}
  for c in by_frequency:
    group_id.setdefault(labels[c], len(group_id))
  groups = np.array([group_id[label] for label in labels])
  names = tuple(group_name([category_names[c] for c in by_frequency
                            if groups[c] == g]) for g in range(len(group_id)))
  return catalogue_lib.Catalogue(tuple(category_names), names, groups)


def groups_from_file(path: pathlib.Path,
                     category_names: Sequence[str]) -> catalogue_lib.Catalogue:
  """Reads a `category,group` CSV; every category of the data needs a row.

  Groups are named by the file's group names; rows for categories the data
  lacks (e.g. filtered away) are ignored.
  """
  category_column, group_column = CATEGORY_COLUMN, GROUP_COLUMN
  if not path.is_file():
    raise FileNotFoundError(
        f"{path}: groups file not found; expected a CSV with columns "
        f"{category_column},{group_column}")
  with open(path, newline="", encoding="utf-8-sig") as stream:
    reader = csv.DictReader(stream)
    header = reader.fieldnames or []
    for column in (category_column, group_column):
      if column not in header:
        raise ValueError(
            f"{path}, line 1 (header): no column {column!r}; found {header}; "
            f"expected columns {category_column},{group_column}")
    assigned: dict[str, str] = {}
    for row in reader:
      category = (row[category_column] or "").strip()
      group = (row[group_column] or "").strip()
      if not category or not group:
        raise ValueError(
            f"{path}, line {reader.line_num}: empty category or group; "
            "expected a category name and its group name")
      if category in assigned:
        raise ValueError(f"{path}, line {reader.line_num}: category "
                         f"{category!r} is assigned twice")
      assigned[category] = group
  missing = [name for name in category_names if name not in assigned]
  if missing:
    raise ValueError(f"{path}: no group for categories {missing}; expected a "
                     "row for every category of the data")
  group_names = tuple(dict.fromkeys(assigned[name] for name in category_names))
  groups = np.array([group_names.index(assigned[name])
                     for name in category_names])
  return catalogue_lib.Catalogue(tuple(category_names), group_names, groups)
