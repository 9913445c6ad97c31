"""End to end with the real embedded model (SmolLM2-135M via xllamacpp)."""

from __future__ import annotations

import pytest

from lerl_recsim.planner import PlanRules, StepRecord, UserHistory, make_planner
from lerl_recsim.scenarios.catalogue import default_catalogue


def test_embedded_model_returns_a_valid_plan():
  pytest.importorskip("xllamacpp")
  catalogue = default_catalogue()
  rock = catalogue.index("rock")
  history = UserHistory(
      (StepRecord((rock, catalogue.index("jazz")), 3.0, True),
       StepRecord((rock, catalogue.index("football")), 0.2, False),
       StepRecord((rock, catalogue.index("movies")), 6.0, True)), 3, 9.2)
  rules = PlanRules()
  planner = make_planner("embedded", catalogue, rules=rules)
  [plan] = planner.plan([history])
  metrics = planner.metrics()
  assert metrics["llm_calls"] == 1 and metrics["fallbacks"] == 0
  assert rules.min_categories <= len(plan) <= rules.max_categories
  assert len(set(plan)) == len(plan) and rock not in plan
  assert all(0 <= c < catalogue.num_categories for c in plan)
