"""What a run records of its planned environments' planners: the counts
of plans by origin, and whether an LLM plans."""

from __future__ import annotations

from typing import Any, Mapping

from lerl_recsim import planner_environment, tf_environment
from lerl_recsim.planner import FALLBACK_CAUSES, Planner

PLANNED_ENVIRONMENTS = (planner_environment.PlannedEnvironment,
                        tf_environment.PlannedTFEnvironment)


def planner_counts(env: Any) -> dict[str, float]:
  """LLM calls, cache hits, plans by origin (the LLM's, provisional,
  fallbacks in all and by cause) and user-steps of a planned env."""
  if not isinstance(env, PLANNED_ENVIRONMENTS):
    return {}
  m = env.planner_metrics()
  keys = ("llm_calls", "cache_hits", "llm_plans", "provisional_plans",
          "fallbacks", *(f"fallback_{c}" for c in FALLBACK_CAUSES),
          "planned_users", "user_steps")
  return {key: float(m.get(key, 0)) for key in keys}


def uses_llm(env: Any) -> bool:
  return isinstance(env, PLANNED_ENVIRONMENTS) and isinstance(env.planner,
                                                              Planner)


def counts_delta(after: Mapping[str, float],
                 before: Mapping[str, float]) -> dict[str, float]:
  return {key: after[key] - before.get(key, 0.0) for key in after}


def reflection_pool(env: Any) -> Any:
  if not isinstance(env, PLANNED_ENVIRONMENTS):
    return None
  return getattr(env.planner, "reflections", None)
