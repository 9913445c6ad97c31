"""The non-LLM planner: diversity over groups, engagement, saturation, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from lerl_recsim.planner import (HeuristicPlanner, PlanRules, StepRecord,
                                 UserHistory, make_planner)
from lerl_recsim.planner.heuristic import histories_to_steps
from lerl_recsim.planner.prompt import PromptConfig
from lerl_recsim.planner.situations import candidate_view
from lerl_recsim.planner.validation import saturated
from lerl_recsim.scenarios.catalogue import default_catalogue
from tests.conftest import SMALL_PLANS

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
  history = UserHistory(recent, 3, 3.0)
  # A plan of 4 fits in the 4 groups the user has not seen.
  plan = HeuristicPlanner(CAT, SMALL_PLANS).plan_one(history)
  groups = {CAT.group_of(c) for c in plan}
  assert len(plan) == 4
  assert "music" not in groups and "sports" not in groups
  assert CAT.index("rock") not in plan
  # A default plan (9 categories, 6 groups) takes the 4 unseen groups
  # first, and never the saturated category.
  plan = HeuristicPlanner(CAT).plan_one(history)
  assert len(plan) == PlanRules().max_categories == 9
  assert {CAT.group_of(c) for c in plan[:4]} == set(CAT.group_names) - {
      "music", "sports"}
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
  with pytest.raises(ValueError, match="size=10"):
    HeuristicPlanner(CAT, size=10)
  with pytest.raises(ValueError, match="timeout_s"):
    make_planner("heuristic", CAT, timeout_s=1.0)
  # Scores are compared as integers of 1e-9 steps in 50 bits: penalties of
  # a million would overflow them.
  with pytest.raises(ValueError, match="group_penalty=2000000.0"):
    HeuristicPlanner(CAT, group_penalty=2e6)


def reference_plan(history: UserHistory, rules: PlanRules, priority: np.ndarray,
                   window: int = 5, size: int = 4) -> tuple[tuple[int, ...],
                                                          list[int]]:
  """The heuristic as first written, one user at a time in plain Python
  (ranking, plan), scores equal to 1e-9 taken as ties: the batched
  TensorFlow version must agree with it."""
  num, groups = CAT.num_categories, list(CAT.category_group)
  recent = history.recent(window)
  cat_seen, group_seen = [0.0] * num, [0.0] * CAT.num_groups
  for step in recent:
    for c in set(step.categories):
      cat_seen[c] += 1
    for g in {groups[c] for c in step.categories}:
      group_seen[g] += 1
  total, count = [0.0] * num, [0] * num
  for step in history.steps:
    for c in set(step.categories):
      total[c] += step.engagement
      count[c] += 1
  scores = []
  scale = max([abs(s.engagement) for s in history.steps] + [0.0]) or 1.0
  prior = (sum(s.engagement for s in history.steps) /
           max(len(history.steps), 1)) / scale
  for c in range(num):
    affinity = (0.0 if not history.steps else
                total[c] / count[c] / scale if count[c] else prior)
    seen = len(recent) or 1
    scores.append(affinity - group_seen[groups[c]] / seen - cat_seen[c] / seen)
  order = sorted(range(num), key=lambda c: (-round(scores[c] * 1e9),
                                            priority[c]))
  ranking = list(order)
  blocked = saturated(history, rules)
  order = [c for c in order if c not in blocked] + [c for c in order
                                                    if c in blocked]
  plan: list[int] = []
  used: set[int] = set()
  for c in order:
    if len(plan) < size and groups[c] not in used:
      plan.append(c)
      used.add(groups[c])
  for c in order:
    if len(plan) < size and c not in plan:
      plan.append(c)
  return tuple(plan), ranking


def random_history(rng: np.random.Generator) -> UserHistory:
  """Up to 12 steps of 1-3 categories, often from few categories (ties and
  saturation), engagement continuous, zero or repeated."""
  pool = rng.choice(CAT.num_categories, size=rng.integers(2, 21), replace=False)
  levels = [0.0, 0.25, 0.5, float(rng.random())]
  steps = tuple(
      StepRecord(tuple(rng.choice(pool, size=rng.integers(1, 4))),
                 levels[rng.integers(4)] if rng.random() < 0.5 else
                 float(rng.random()), bool(rng.random() < 0.7))
      for _ in range(rng.integers(0, 13)))
  return UserHistory(steps, len(steps) + int(rng.integers(0, 3)), 1.0)


def test_batched_heuristic_matches_the_per_user_reference_on_random_histories():
  rng = np.random.default_rng(7)
  histories = [random_history(rng) for _ in range(3000)]
  # The default plan size (8: every group, then more) and a small one (4).
  for seed, rules in ((0, PlanRules()), (3, SMALL_PLANS)):
    planner = HeuristicPlanner(CAT, rules, seed=seed)
    size = rules.max_categories
    plans = planner.plan(histories)
    assert {len(p) for p in plans} == {size}
    priority = np.random.default_rng(seed).permutation(CAT.num_categories)

    def reference(h):
      return reference_plan(h, rules, priority, size=size)

    mismatches = [i for i, h in enumerate(histories)
                  if plans[i] != reference(h)[0]]
    assert not mismatches, (mismatches[:5], plans[mismatches[0]],
                            reference(histories[mismatches[0]]))
    for h in histories[:200]:
      assert planner.ranking(h) == reference(h)[1]


def test_plan_sets_of_the_graph_are_the_plans_categories():
  rng = np.random.default_rng(11)
  histories = [random_history(rng) for _ in range(1000)]
  planner = HeuristicPlanner(CAT, seed=2)
  steps = histories_to_steps(histories, 20)
  sets = planner.batch.plan_sets(steps).numpy()
  for row, plan in zip(sets, planner.plan(histories)):
    assert set(np.flatnonzero(row)) == set(plan)


def test_shortlists_read_off_the_pick_places_are_the_heuristics_first_picks():
  """The graph environment reads the prompt's shortlist off the pick places
  it already has: the same sets as `shortlist_sets`, at every size."""
  rng = np.random.default_rng(13)
  histories = [random_history(rng) for _ in range(1000)]
  planner = HeuristicPlanner(CAT, seed=2)
  steps = histories_to_steps(histories, CAT.num_categories)
  _, places = planner.batch.plans_and_pick_places(steps)
  for size in (1, 8, 12, CAT.num_categories):
    config = PromptConfig(shortlist_size=size)
    computed = candidate_view(planner.batch, steps, config)
    read_off = candidate_view(planner.batch, steps, config, places)
    np.testing.assert_array_equal(read_off[0], computed[0])
    np.testing.assert_array_equal(read_off[1], computed[1])
    assert (np.sum(read_off[0].numpy(), axis=1) == size).all()
