"""The planner wrapper: masks from plans, replanning, reflections, contract."""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pytest
from tf_agents.environments import utils as env_utils

import lerl_recsim
from lerl_recsim.agents.scripted_policies import RandomPolicy
from lerl_recsim.planner import HeuristicPlanner, UserHistory
from lerl_recsim.planner_environment import (PlannedEnvironment,
                                             make_planned_env)
from tests.conftest import SMALL_PLANS


class CountingPlanner:
  """Heuristic plans (or fixed ones), with every call recorded (test double)."""

  def __init__(self, catalogue, fixed: tuple[int, ...] | None = None):
    self.inner = HeuristicPlanner(catalogue)
    self.fixed = fixed
    self.batches: list[list[UserHistory]] = []
    self.ended: list[UserHistory] = []

  def plan(self, histories: Sequence[UserHistory]) -> list[tuple[int, ...]]:
    self.batches.append(list(histories))
    if self.fixed is not None:
      return [self.fixed] * len(histories)
    return self.inner.plan(histories)

  def end_sessions(self, histories: Sequence[UserHistory]) -> None:
    self.ended.extend(histories)

  def metrics(self) -> dict[str, float]:
    return {}


def wrapped(replan_every=3, fixed=None, num_users=6, **overrides):
  options = dict(num_users=num_users, seed=3, num_items=60)
  options.update(overrides)
  env = lerl_recsim.make_env(**options)
  planner = CountingPlanner(env.scenario.catalogue, fixed)
  planned = make_planned_env(env, planner, replan_every)
  assert isinstance(planned, PlannedEnvironment) and planned.planner is planner
  return planned, planner


def roll(env, steps, seed=0):
  policy = RandomPolicy(env, seed=seed)
  time_steps = [env.reset()]
  for _ in range(steps):
    time_steps.append(env.step(policy.action(time_steps[-1]).action))
  return time_steps


def test_passes_validate_py_environment_with_splitter():
  env, _ = wrapped()
  env_utils.validate_py_environment(
      env, episodes=5,
      observation_and_action_constraint_splitter=lerl_recsim.splitter)


def test_mask_is_exactly_the_items_of_the_plan():
  env, _ = wrapped(slate_size=2)
  categories = env.scenario.items.categories > 0
  policy = RandomPolicy(env)
  time_step = env.reset()
  for _ in range(25):
    mask = time_step.observation["mask"]
    for slot, plan in enumerate(env.plans):
      in_plan = categories[:, list(plan)].any(axis=1)
      np.testing.assert_array_equal(mask[slot], in_plan)
      assert mask[slot].sum() >= 2
    time_step = env.step(policy.action(time_step).action)


def test_replans_every_k_steps_and_at_session_start_in_one_batch():
  k = 3
  env, planner = wrapped(replan_every=k)
  time_steps = roll(env, 60)
  assert len(planner.batches[0]) == env.batch_size  # reset plans everyone
  assert all(h.session_length == 0 for h in planner.batches[0])
  batches = iter(planner.batches[1:])
  since = np.zeros(env.batch_size, int)
  for before, after in zip(time_steps[:-1], time_steps[1:]):
    first = after.is_first()
    since = np.where(first, 0, since + 1)
    due = first | ((since >= k) & ~after.is_last())
    if due.any():
      batch = next(batches)  # exactly one plan() call per step
      lengths = after.observation["observation"]["session_length"][due]
      assert [h.session_length for h in batch] == lengths.tolist()
      assert all(length % k == 0 for length in lengths)
      since[due] = 0
  assert next(batches, None) is None
  assert env.planner_metrics()["plan_batches"] == len(planner.batches)


def test_k_1_replans_every_active_user_every_step():
  env, planner = wrapped(replan_every=1)
  time_steps = roll(env, 10)
  assert len(planner.batches) == len(time_steps)
  for time_step, batch in zip(time_steps[1:], planner.batches[1:]):
    assert len(batch) == (~time_step.is_last()).sum()


def test_plan_without_enough_items_is_widened_and_counted():
  # One item per category: a 2-category plan cannot fill a 3-item slate.
  env, planner = wrapped(fixed=(0, 1), num_items=20, slate_size=3,
                         num_users=4)
  time_step = env.reset()
  assert env.planner_metrics()["widenings"] == 4
  for slot, plan in enumerate(env.plans):
    assert plan[:2] == (0, 1) and len(plan) == 3
    assert time_step.observation["mask"][slot].sum() == 3


def test_reflection_gets_the_departed_session_not_the_new_user():
  env, planner = wrapped(num_users=4, exit_rule="temper",
                         exit_params={"initial_temper": 4.0})
  time_steps = roll(env, 30)
  assert planner.ended
  ended = iter(planner.ended)
  for time_step in time_steps:
    observation = time_step.observation["observation"]
    for slot in np.flatnonzero(time_step.is_last()):
      history = next(ended)
      length = int(observation["session_length"][slot])
      assert length > 0 and history.session_length == length
      items = observation["item_history"][slot, -length:, 0]
      categories = env.scenario.items.categories[items].argmax(axis=1)
      assert [s.categories[0] for s in history.steps] == categories.tolist()
  assert env.planner_metrics()["ended_sessions"] == len(planner.ended)


def test_action_outside_the_wrapper_mask_names_slot_and_item():
  env, _ = wrapped(fixed=(0, 1))
  time_step = env.reset()
  actions = RandomPolicy(env).action(time_step).action.copy()
  banned = int(np.flatnonzero(~time_step.observation["mask"][2])[0])
  actions[2] = banned
  with pytest.raises(ValueError, match=rf"slot 2 recommends item {banned}, "
                     "which its mask excludes"):
    env.step(actions)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "3", True])
def test_bad_replan_every_is_rejected(bad):
  env = lerl_recsim.make_env(num_users=2, seed=0, num_items=30)
  with pytest.raises(ValueError, match=f"replan_every must be an int >= 1.*"
                     f"got {bad!r}"):
    PlannedEnvironment(env, HeuristicPlanner(env.scenario.catalogue), bad)
  with pytest.raises(ValueError, match="replan_every"):
    make_planned_env(planner="heuristic", replan_every=bad, num_users=2)


def test_random_masked_policy_never_leaves_the_mask():
  env = make_planned_env(planner="heuristic", replan_every=2, num_users=16,
                         seed=5, num_items=80, slate_size=3)
  policy = RandomPolicy(env, seed=1)
  time_step = env.reset()
  for _ in range(150):
    action = policy.action(time_step).action
    mask = time_step.observation["mask"]
    active = ~time_step.is_last()
    assert np.take_along_axis(mask, action, axis=1)[active].all()
    time_step = env.step(action)
  assert env.planner_metrics()["user_steps"] > 2000


def test_fake_llm_backend_metrics_and_cache():
  reply = json.dumps({"categories": ["jazz", "tennis", "cooking"]})
  env = make_planned_env(planner="fake", replan_every=2, num_users=8, seed=0,
                         num_items=60,
                         model_options={"responses": [reply, "lesson"]},
                         planner_options={"rules": SMALL_PLANS})
  catalogue = env.scenario.catalogue
  first = env.reset()
  expected = {catalogue.index(n) for n in ("jazz", "tennis", "cooking")}
  assert all(set(plan) == expected for plan in env.plans)
  assert first.observation["mask"].any(axis=1).all()
  policy = RandomPolicy(env)
  time_step = first
  for _ in range(40):
    time_step = env.step(policy.action(time_step).action)
  m = env.planner_metrics()
  assert m["cache_hits"] > 0 and m["llm_calls"] < m["planned_users"]
  assert m["llm_calls_per_1k_user_steps"] == pytest.approx(
      1000 * m["llm_calls"] / m["user_steps"])
  for key in ("fallback_parse_error", "fallback_invalid_plan",
              "fallback_exception", "fallback_timeout", "widenings"):
    assert key in m


def test_a_ready_environment_is_wrapped_as_it_is_and_not_resized():
  env = lerl_recsim.make_env(num_users=5, seed=3, num_items=60)
  planned = make_planned_env(env, "heuristic", 2)
  assert planned.batch_size == 5 and planned.replan_every == 2
  with pytest.raises(ValueError, match=r"^num_users and scenario overrides "
                     r"apply only when scenario is a name; got the "
                     r"environment RecSimEnvironment with num_users=8 and "
                     r"overrides \['slate_size'\]$"):
    make_planned_env(env, "heuristic", 2, num_users=8, slate_size=3)


def test_planner_objects_refuse_backend_options():
  env = lerl_recsim.make_env(num_users=2, seed=0, num_items=30)
  with pytest.raises(ValueError, match="only when planner is a backend string"):
    make_planned_env(planner=HeuristicPlanner(env.scenario.catalogue),
                     num_users=2, planner_options={"reflection_k": 1})


@pytest.mark.parametrize("backend", ["embedded", "gguf:/models/small.gguf"])
def test_a_local_model_plans_without_lessons_in_runs_and_bundles(backend):
  from lerl_recsim import bundle, planner_environment
  from lerl_recsim.experiments import export
  assert planner_environment.default_planner_options(backend) == {
      "prompt_config": planner_environment.LOCAL_MODEL_PROMPT_CONFIG,
      "reflections": None}
  scenario = lerl_recsim.make_env(num_users=2, seed=0).scenario
  run = {"agent": "lerl", "scenario": "interest_evolution",
         "scenario_overrides": {}, "seed": 0, "planner": backend,
         "replan_every": 1}
  spec = export.build_spec({"run": run}, scenario, False)
  assert spec["planner"]["reflect_every"] is None
  planner = bundle.planner_from_spec(spec, "embedded", None, 0)
  assert planner.reflections is None
  assert planner.prompt_config == planner_environment.LOCAL_MODEL_PROMPT_CONFIG


def test_a_remote_model_writes_lessons_by_default():
  from lerl_recsim import planner_environment
  options = planner_environment.default_planner_options("openai:any-model")
  assert options == {"prompt_config": planner_environment.SCENARIO_PROMPT_CONFIG,
                     "reflect_every": 16, "reflect_growth": 1.25}
  planner = planner_environment.build_planner(
      "fake", lerl_recsim.make_env(num_users=2, seed=0).scenario.catalogue, 0,
      model_options={"responses": ["{}"]})
  assert planner.reflections is not None and planner.lesson_schedule.gap == 16


def test_a_local_model_asked_in_the_background_leaves_cores_to_training():
  from lerl_recsim import planner_environment
  from lerl_recsim.planner import chat_models
  catalogue = lerl_recsim.make_env(num_users=2, seed=0).scenario.catalogue

  def threads(**options):
    planner = planner_environment.build_planner("embedded", catalogue, 0,
                                                **options)
    return planner._model.n_threads

  assert threads() == chat_models.local_threads()
  assert threads(background=True) == planner_environment.BACKGROUND_MODEL_THREADS == 1
  assert threads(background=True, model_options={"n_threads": 2}) == 2
  # Remote models take no thread setting.
  remote = planner_environment.build_planner(
      "fake", catalogue, 0, model_options={"responses": ["{}"]}, background=True)
  assert not hasattr(remote._model, "n_threads")
