"""The planner's typed counters and how an environment merges them."""

import pytest

from lerl_recsim.planner import FALLBACK_CAUSES, PlannerCounts
from lerl_recsim.planner_environment import combined_metrics


def test_counts_round_trip_through_json_with_one_key_per_cause():
  counts = PlannerCounts(planned_users=7, llm_plans=4, provisional_plans=1)
  counts.fallbacks["timeout"] = 2
  values = counts.as_json()
  assert values["fallback_timeout"] == 2 and "fallbacks" not in values
  assert {f"fallback_{c}" for c in FALLBACK_CAUSES} <= set(values)
  assert PlannerCounts.from_json(values) == counts


def test_an_unknown_counter_name_is_named_in_the_error():
  with pytest.raises(ValueError, match=r"unknown planner counters "
                     r"\['users_planned'\]; expected names among \[.*"
                     r"'planned_users'.*\]"):
    PlannerCounts.from_json({"users_planned": 3})


def test_metrics_sum_the_causes_and_the_lessons_that_reached_the_model():
  counts = PlannerCounts(reflections_written=3, reflection_failures=2)
  counts.fallbacks.update(timeout=2, parse_error=5)
  m = counts.metrics()
  assert m["fallbacks"] == 7.0 and m["fallback_parse_error"] == 5.0
  assert m["reflection_requests"] == 5.0


def test_the_environments_counts_replace_the_planners_and_set_the_share():
  planner = PlannerCounts(planned_users=10, llm_plans=6).metrics()
  planner["llm_calls"] = 3.0
  merged = combined_metrics(planner, {"planned_users": 40.0,
                                      "user_steps": 2000.0}, 1.5)
  # 6 of the 40 users the environment planned (the planner saw 10 of them).
  assert merged["planned_users"] == 40.0
  assert merged["llm_plan_share"] == pytest.approx(6 / 40)
  assert merged["llm_calls_per_1k_user_steps"] == pytest.approx(1.5)
  assert merged["planned_users_per_1k_user_steps"] == pytest.approx(20.0)
  assert merged["planner_seconds"] == 1.5


def test_a_planner_without_counters_reports_no_llm_plans():
  merged = combined_metrics({}, {"planned_users": 5.0, "user_steps": 50.0},
                            0.0)
  assert merged["llm_plans"] == merged["llm_plan_share"] == 0.0
