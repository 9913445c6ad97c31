"""A planner without an LLM: the fallback, and the ablation for the LLM.

Each category is scored by how the user responded to it (mean engagement,
relative to the user's largest) minus how much of it, and of its semantic
group, the user saw in the recent window. The plan takes the best category of
as many different groups as it can, then fills up with the next best.
Saturated categories are left out as in LLM plans. Ties are broken by a
permutation drawn from the seed once, so a plan is a pure function of the
history: same seed and history, same plan.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lerl_recsim.planner.history import UserHistory
from lerl_recsim.planner.validation import PlanRules, saturated
from lerl_recsim.scenarios.catalogue import Catalogue


class HeuristicPlanner:
  """Diversify over groups not seen recently, weighted by engagement."""

  def __init__(self, catalogue: Catalogue, rules: PlanRules = PlanRules(), *,
               window: int = 5, size: int | None = None, seed: int = 0,
               group_penalty: float = 1.0,
               category_penalty: float = 1.0) -> None:
    rules.check_catalogue(catalogue)
    size = rules.max_categories if size is None else size
    if not rules.min_categories <= size <= rules.max_categories:
      raise ValueError(
          f"size={size} lies outside [{rules.min_categories}, "
          f"{rules.max_categories}] set by the rules")
    if window < 1:
      raise ValueError(f"window must be >= 1, got {window}")
    self.catalogue = catalogue
    self.rules = rules
    self.window = window
    self.size = size
    self.group_penalty = group_penalty
    self.category_penalty = category_penalty
    self._priority = np.random.default_rng(seed).permutation(
        catalogue.num_categories)
    self._groups = [int(g) for g in catalogue.category_group]

  def scores(self, history: UserHistory) -> np.ndarray:
    """float [num_categories]; higher is a better next category."""
    # Counting in Python: for a handful of steps over ~20 categories, NumPy's
    # per-call overhead costs more than the arithmetic (this runs for every
    # planned user).
    num = self.catalogue.num_categories
    groups = self._groups
    recent = history.recent(self.window)
    cat_seen = [0.0] * num
    group_seen = [0.0] * self.catalogue.num_groups
    for step in recent:
      shown = set(step.categories)
      for c in shown:
        cat_seen[c] += 1
      for g in {groups[c] for c in shown}:
        group_seen[g] += 1
    total = [0.0] * num
    count = [0] * num
    for step in history.steps:
      for c in set(step.categories):
        total[c] += step.engagement
        count[c] += 1
    cat_seen_arr = np.asarray(cat_seen)
    group_seen_arr = np.asarray(group_seen)
    if recent:
      cat_seen_arr /= len(recent)
      group_seen_arr /= len(recent)
    affinity = np.zeros(num)
    if history.steps:
      scale = max(abs(s.engagement) for s in history.steps) or 1.0
      prior = np.mean([s.engagement for s in history.steps]) / scale
      counts = np.asarray(count)
      affinity = np.where(counts > 0, np.asarray(total) /
                          np.maximum(counts, 1) / scale, prior)
    return (affinity - self.group_penalty * group_seen_arr[self.catalogue.category_group]
            - self.category_penalty * cat_seen_arr)

  def ranking(self, history: UserHistory) -> list[int]:
    """Every category id, best first (ties by the seeded priority)."""
    scores = self.scores(history)
    return sorted(range(self.catalogue.num_categories),
                  key=lambda c: (-scores[c], self._priority[c]))

  def plan_one(self, history: UserHistory) -> tuple[int, ...]:
    order = self.ranking(history)
    if self.rules.exclude_saturated:
      blocked = saturated(history, self.rules)
      allowed = [c for c in order if c not in blocked]
      # Only when too few categories remain are saturated ones used, last.
      if len(allowed) < self.size:
        allowed += [c for c in order if c in blocked]
      order = allowed
    plan: list[int] = []
    used_groups: set[int] = set()
    for c in order:
      group = self._groups[c]
      if len(plan) < self.size and group not in used_groups:
        plan.append(c)
        used_groups.add(group)
    for c in order:
      if len(plan) < self.size and c not in plan:
        plan.append(c)
    return tuple(plan)

  def plan(self, histories: Sequence[UserHistory],
           wait: bool = True) -> list[tuple[int, ...]]:
    """One plan (category ids, best first) per history; always immediate,
    so `wait` (part of the common interface) changes nothing."""
    del wait
    return [self.plan_one(h) for h in histories]

  def end_sessions(self, histories: Sequence[UserHistory],
                   wait: bool = True) -> None:
    """Nothing to learn from finished sessions; kept for the common interface."""
    del histories, wait

  def metrics(self) -> dict[str, float]:
    return {}

  def evaluation_view(self) -> HeuristicPlanner:
    """Itself: it keeps no state for evaluation to disturb; kept for the
    common interface (see `Planner.evaluation_view`)."""
    return self

  def close(self) -> None:
    """Nothing runs in the background; kept for the common interface."""
