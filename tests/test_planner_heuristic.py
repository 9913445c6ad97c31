"""The non-LLM planner: diversity over groups, engagement, saturation, seeds."""

from __future__ import annotations

import pytest

from lerl_recsim.planner import (HeuristicPlanner, PlanRules, StepRecord,
                                 UserHistory, make_planner)
from lerl_recsim.scenarios.catalogue import default_catalogue

CAT = default_catalogue()


def ids(*names: str) -> tuple[int, ...]:
  return tuple(CAT.index(n) for n in names)


def steps(*slates: tuple[str, ...], engagement: float = 1.0) -> tuple[StepRecord, ...]:
  return tuple(StepRecord(ids(*s), engagement, True) for s in slates)


def test_plan_spans_different_groups_and_has_the_rule_size():
  planner = HeuristicPlanner(CAT, PlanRules(min_categories=2, max_categories=4))
  for plan in planner.plan([UserHistory(),
                            UserHistory(steps(("rock",), ("jazz",)), 2, 2.0)]):
    assert len(plan) == 4
    assert len({CAT.group_of(c) for c in plan}) == 4


def test_recently_seen_groups_are_avoided_and_saturated_never_chosen():
  recent = steps(("rock", "jazz"), ("rock", "football"), ("rock", "tennis"))
  plan = HeuristicPlanner(CAT).plan_one(UserHistory(recent, 3, 3.0))
  groups = {CAT.group_of(c) for c in plan}
  assert "music" not in groups and "sports" not in groups
  assert CAT.index("rock") not in plan


def test_engagement_weights_old_favourites_above_old_dislikes():
  history = UserHistory(
      steps(("cooking",), engagement=8.0) + steps(("politics",), engagement=0.0)
      + steps(*[("tennis",)] * 5, engagement=1.0), 7, 9.0)
  planner = HeuristicPlanner(CAT, PlanRules(min_categories=1, max_categories=1))
  assert planner.plan_one(history) == ids("cooking")
  scores = planner.scores(history)
  assert scores[CAT.index("cooking")] > scores[CAT.index("politics")]


def test_deterministic_given_seed_and_seed_changes_ties():
  histories = [UserHistory()] * 3
  a = HeuristicPlanner(CAT, seed=1).plan(histories)
  assert a == HeuristicPlanner(CAT, seed=1).plan(histories)
  assert len(set(a)) == 1
  assert any(HeuristicPlanner(CAT, seed=s).plan(histories) != a
             for s in range(2, 6))


def test_saturated_categories_return_only_when_nothing_else_is_left():
  tiny = type(CAT).from_taxonomy({"a": ("x", "y"), "b": ("z",)})
  history = UserHistory(
      tuple(StepRecord((0, 1), 1.0, True) for _ in range(3)), 3, 3.0)
  plan = HeuristicPlanner(tiny, PlanRules(min_categories=2, max_categories=2)
                          ).plan_one(history)
  assert plan[0] == 2 and len(plan) == 2


def test_factory_and_bad_options():
  assert isinstance(make_planner("heuristic", CAT), HeuristicPlanner)
  with pytest.raises(ValueError, match="size=9"):
    HeuristicPlanner(CAT, size=9)
  with pytest.raises(ValueError, match="timeout_s"):
    make_planner("heuristic", CAT, timeout_s=1.0)
