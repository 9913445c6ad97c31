"""What a planner has done, one typed counter per event and one name each.

Where a planned environment counts the same event it uses the same name
(`planned_users`, `plan_batches`), and its count replaces the planner's in
their merged metrics (`planner_environment.combined_metrics`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from lerl_recsim.planner.chain import FALLBACK_CAUSES


@dataclasses.dataclass
class PlannerCounts:
  """A planner's counters.

  Every planned user counts once: as `llm_plans`, `provisional_plans` (the
  heuristic's plan while its situation is asked in the background) or in
  `fallbacks` under its cause (FALLBACK_CAUSES).

  Attributes:
    plan_batches: Calls that planned users (one batch each).
    planned_users: Users planned.
    shared_requests: Users answered by another user's request in the same
      batch (same situation).
    memo_hits: Situations answered from the in-process memo of plans.
    retry_requests: Plan requests asked again after a failed request.
    llm_plans: Users whose plan is the model's.
    provisional_plans: Users given the heuristic plan while waiting.
    fallbacks: Users given the heuristic plan because their situation's
      request failed or is backing off, by cause.
    background_answers: Answers (plans and lessons) the background worker
      has given.
    reflection_sessions: Finished sessions handed to the lesson schedule
      (none in an evaluation view or without a reflection pool).
    reflections_scheduled: Lessons the schedule asked for; each is written,
      failed in the model, dropped or still in the background.
    reflections_written, reflection_failures: Lessons stored in the pool,
      and lesson requests the model failed.
    reflections_dropped: Lessons dropped because the background queue was
      full or the planner closed first.
  """
  plan_batches: int = 0
  planned_users: int = 0
  shared_requests: int = 0
  memo_hits: int = 0
  retry_requests: int = 0
  llm_plans: int = 0
  provisional_plans: int = 0
  fallbacks: dict[str, int] = dataclasses.field(
      default_factory=lambda: dict.fromkeys(FALLBACK_CAUSES, 0))
  background_answers: int = 0
  reflection_sessions: int = 0
  reflections_scheduled: int = 0
  reflections_written: int = 0
  reflection_failures: int = 0
  reflections_dropped: int = 0

  def as_json(self) -> dict[str, int]:
    """Flat JSON values: each fallback cause as `fallback_<cause>`."""
    out = {field.name: getattr(self, field.name)
           for field in dataclasses.fields(self) if field.name != "fallbacks"}
    out.update({f"fallback_{cause}": n for cause, n in self.fallbacks.items()})
    return out

  @classmethod
  def from_json(cls, values: Mapping[str, Any]) -> PlannerCounts:
    """The inverse of `as_json`; ValueError naming any unknown counter."""
    expected = set(cls().as_json())
    unknown = sorted(set(values) - expected)
    if unknown:
      raise ValueError(f"unknown planner counters {unknown}; expected "
                       f"names among {sorted(expected)}")
    counts = cls()
    for name, value in values.items():
      if name.startswith("fallback_"):
        counts.fallbacks[name[len("fallback_"):]] = int(value)
      else:
        setattr(counts, name, int(value))
    return counts

  def metrics(self) -> dict[str, float]:
    """The counters as floats, with the sums `fallbacks` (all causes) and
    `reflection_requests` (lessons that reached the model)."""
    out = {name: float(value) for name, value in self.as_json().items()}
    out["fallbacks"] = float(sum(self.fallbacks.values()))
    out["reflection_requests"] = float(self.reflections_written
                                       + self.reflection_failures)
    return out
