"""Content categories and their semantic groups.

A planner that knows what category names mean (that "tennis" and "football"
are both sports) can diversify across groups instead of across arbitrary ids;
the scenarios make that knowledge useful by letting satiation spill over
inside a group.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

# The default taxonomy of the `interest_evolution` scenario: 20 categories in
# 6 groups. Fixed before any agent comparison; see README "Scenario defaults".
DEFAULT_TAXONOMY: Mapping[str, Sequence[str]] = {
    "sports": ("football", "basketball", "tennis", "cycling"),
    "music": ("rock", "jazz", "hip-hop", "classical"),
    "news": ("politics", "business", "world news"),
    "film and tv": ("movies", "tv series", "stand-up comedy"),
    "lifestyle": ("cooking", "travel", "fitness"),
    "learning": ("science", "history", "technology"),
}


@dataclasses.dataclass(frozen=True)
class Catalogue:
  """Category names, their semantic groups, and which items belong where.

  Attributes:
    category_names: One human-readable name per category id.
    group_names: One name per semantic group id.
    category_group: int array [num_categories], the group id of each category.
  """

  category_names: tuple[str, ...]
  group_names: tuple[str, ...]
  category_group: np.ndarray

  def __post_init__(self) -> None:
    groups = np.asarray(self.category_group)
    if groups.shape != (len(self.category_names),):
      raise ValueError(
          f"category_group has shape {groups.shape}; expected "
          f"({len(self.category_names)},), one group id per category.")
    if len(set(self.category_names)) != len(self.category_names):
      raise ValueError(f"category names must be unique, got {self.category_names}")
    if groups.size and (groups.min() < 0 or groups.max() >= len(self.group_names)):
      raise ValueError(
          f"group ids must lie in [0, {len(self.group_names) - 1}], "
          f"got {sorted(set(groups.tolist()))}")
    object.__setattr__(self, "category_group", groups.astype(np.int32))

  @classmethod
  def from_taxonomy(cls, taxonomy: Mapping[str, Sequence[str]]) -> "Catalogue":
    """Builds a catalogue from {group name: [category names]}."""
    names: list[str] = []
    groups: list[int] = []
    for group_id, members in enumerate(taxonomy.values()):
      if not members:
        raise ValueError("every group of a taxonomy needs at least one category")
      names.extend(members)
      groups.extend([group_id] * len(members))
    return cls(tuple(names), tuple(taxonomy.keys()), np.asarray(groups))

  @property
  def num_categories(self) -> int:
    return len(self.category_names)

  @property
  def num_groups(self) -> int:
    return len(self.group_names)

  def same_group_matrix(self) -> np.ndarray:
    """float32 [C, C]: 1 where two distinct categories share a group."""
    same = self.category_group[:, None] == self.category_group[None, :]
    np.fill_diagonal(same, False)
    return same.astype(np.float32)

  def index(self, name: str) -> int:
    """The id of a category name; a clear error for unknown names."""
    try:
      return self.category_names.index(name)
    except ValueError:
      raise KeyError(
          f"unknown category {name!r}; known categories: "
          f"{', '.join(self.category_names)}") from None

  def group_of(self, category: int) -> str:
    return self.group_names[int(self.category_group[category])]


def default_catalogue() -> Catalogue:
  return Catalogue.from_taxonomy(DEFAULT_TAXONOMY)
