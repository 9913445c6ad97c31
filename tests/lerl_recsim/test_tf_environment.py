"""The TensorFlow-native environments and graph collection: the same
trajectories as the Python environments and step-by-step collection."""

from __future__ import annotations

import collections
import json
import threading
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from langchain_core.language_models.fake_chat_models import FakeListChatModel

import lerl_recsim
from lerl_recsim import planner_environment, tf_environment
from lerl_recsim.planner import Planner, ReflectionPool
from lerl_recsim.scenarios.catalogue import default_catalogue
from tests.conftest import (SCENARIO, SMALL_PLANS, PromptHashChatModel,
                            assert_same, collect)

CATALOGUE = default_catalogue()

def test_flat_graph_environment_repeats_the_python_trajectories():
  py = collect(lerl_recsim.make_env(num_users=6, seed=3, **SCENARIO), 60)
  graph = collect(tf_environment.make_tf_env(num_users=6, seed=3, **SCENARIO),
                  60)
  assert_same(py, graph)
  assert len(py[1]["cumulative_reward"]) > 6  # sessions ended and restarted


@pytest.mark.parametrize("replan_every", [1, 3])
def test_heuristic_planned_graph_environment_repeats_the_python_one(
    replan_every):
  args = dict(planner="heuristic", replan_every=replan_every, num_users=6,
              seed=5, **SCENARIO)
  py_env = planner_environment.make_planned_env(**args)
  graph_env = tf_environment.make_planned_tf_env(**args)
  py, graph = collect(py_env, 60), collect(graph_env, 60)
  assert_same(py, graph)
  masks = py[0].observation["mask"]
  assert (masks.sum(-1) < 60).all()  # planned masks, not all items
  planned = np.stack([np.isin(np.arange(20), plan) for plan in py_env.plans])
  np.testing.assert_array_equal(graph_env.plan_sets(), planned)
  py_counts, graph_counts = (py_env.planner_metrics(),
                             graph_env.planner_metrics())
  for key in ("user_steps", "planned_users", "ended_sessions"):
    assert graph_counts[key] == py_counts[key], key


def hash_planner() -> Planner:
  return Planner(PromptHashChatModel(), CATALOGUE, rules=SMALL_PLANS,
                 prompt_config=planner_environment.SCENARIO_PROMPT_CONFIG,
                 reflections=ReflectionPool(), reflect_every=3)


@pytest.mark.parametrize("replan_every", [1, 2])
def test_llm_planned_graph_environment_waiting_repeats_the_python_one(
    replan_every):
  args = dict(replan_every=replan_every, num_users=6, seed=1, **SCENARIO)
  py_env = planner_environment.make_planned_env(planner=hash_planner(), **args)
  graph_env = tf_environment.make_planned_tf_env(planner=hash_planner(), **args)
  py, graph = collect(py_env, 60), collect(graph_env, 60)
  assert_same(py, graph)
  py_counts, graph_counts = (py_env.planner_metrics(),
                             graph_env.planner_metrics())
  for key in ("llm_calls", "llm_plans", "planned_users", "fallbacks",
              "reflection_pool_size"):
    assert graph_counts[key] == py_counts[key], key
  assert graph_counts["reflection_pool_size"] > 0
  assert 0 < graph_counts["fallbacks"] < graph_counts["llm_plans"]


def test_a_restored_planned_environment_continues_exactly(tmp_path):
  """The checkpoint's variables and `saved_state` (in JSON) restore a fresh
  environment and planner to where the original was: both then go on with
  the same users, plans, lessons and planner counts."""
  args = dict(replan_every=1, num_users=6, seed=1, **SCENARIO)
  original = tf_environment.make_planned_tf_env(planner=hash_planner(), **args)
  collect(original, 30)
  path = tf.train.Checkpoint(env=original.checkpoint_state()).save(
      str(tmp_path / "ckpt"))
  saved = json.loads(json.dumps(original.saved_state()))
  original.planner.reflections.save(tmp_path / "reflections.json")
  assert saved["planner"]["memo"] and saved["stored"]
  expected = collect(original, 30)[0]

  planner = hash_planner()
  planner.reflections = ReflectionPool.load(tmp_path / "reflections.json")
  restored = tf_environment.make_planned_tf_env(planner=planner, **args)
  tf.train.Checkpoint(env=restored.checkpoint_state()).restore(
      path).assert_existing_objects_matched()
  restored.load_saved_state(saved)
  assert restored.started
  assert_same(collect(restored, 30)[0], expected)
  after, again = original.planner_metrics(), restored.planner_metrics()
  timing = ("latency", "seconds", "busy")
  assert {k: v for k, v in after.items() if not any(t in k for t in timing)} \
      == {k: v for k, v in again.items() if not any(t in k for t in timing)}
  assert after["reflection_pool_size"] > 0 and after["fallbacks"] > 0


def test_background_planning_serves_stored_situations_from_the_table():
  reply = json.dumps({"categories": ["jazz", "tennis", "cooking"]})
  env = tf_environment.make_planned_tf_env(
      planner="fake", replan_every=1, num_users=8, seed=0,
      wait_for_planner=False, model_options={"responses": [reply]},
      planner_options={"reflections": None, "rules": SMALL_PLANS}, **SCENARIO)
  collect(env, 30)
  env.planner.flush()
  collect(env, 30)
  m = env.planner_metrics()
  assert m["situations_in_table"] > 0
  assert 0 < m["llm_plans"] < m["planned_users"]
  assert m["llm_plans"] + m["provisional_plans"] == m["planned_users"]
  env.planner.close()


class GatedHashChatModel(PromptHashChatModel):
  """PromptHashChatModel that answers only once `gate` is open."""

  gate: Any = None

  def _generate(self, messages, stop=None, run_manager=None, **kwargs):
    assert self.gate.wait(60), "the test never opened the gate"
    return super()._generate(messages, stop, run_manager, **kwargs)


def test_background_asks_first_about_the_situations_most_users_miss():
  gate = threading.Event()
  planner = Planner(GatedHashChatModel(gate=gate), CATALOGUE,
                    rules=SMALL_PLANS, reflections=None,
                    prompt_config=planner_environment.SCENARIO_PROMPT_CONFIG)
  env = tf_environment.make_planned_tf_env(
      planner=planner, replan_every=1, num_users=16, seed=3,
      wait_for_planner=False, **SCENARIO)
  in_flight = 2 * planner.max_concurrency
  collect(env, 20)  # the model answers nothing yet
  assert planner.background_pending == in_flight  # not one per situation
  first = set(env._unanswered)
  missed = collections.Counter(env._misses)
  assert len(missed) > 2 * in_flight
  gate.set()
  assert planner.flush(60)
  collect(env, 5)  # one graph call: takes the answers in, asks again
  asked_next = set(env._unanswered)
  assert asked_next and not asked_next & first
  # Each situation asked next was missed at least as often as any left.
  left = [key for key in env._misses if key not in asked_next]
  assert min(env._misses[k] for k in asked_next) >= max(
      env._misses[k] for k in left)
  planner.close()


class HurryRecorder(Planner):
  """A Planner that records what the environment tells it about need."""

  def __init__(self, *args: Any, **kwargs: Any) -> None:
    super().__init__(*args, **kwargs)
    self.hurried: list[bool] = []

  def hurry(self, needed: bool) -> None:
    self.hurried.append(needed)
    super().hurry(needed)


def test_background_hurries_the_llm_while_most_plans_miss_it():
  reply = json.dumps({"categories": ["jazz", "tennis", "cooking"]})
  planner = HurryRecorder(
      FakeListChatModel(responses=[reply]), CATALOGUE, rules=SMALL_PLANS,
      reflections=None,
      prompt_config=planner_environment.SCENARIO_PROMPT_CONFIG)
  # Plans only at session start, where every user is in one situation.
  env = tf_environment.make_planned_tf_env(
      planner=planner, replan_every=1000, num_users=8, seed=0,
      wait_for_planner=False, **SCENARIO)
  collect(env, 5)  # the reset and one graph call: every user missed
  assert planner.hurried and all(planner.hurried)
  assert planner.flush(60)
  collect(env, 5)  # the situation's answer is taken in
  collect(env, 40)  # from now on the sessions that start hit the table
  m = env.planner_metrics()
  assert m["llm_plans"] > 0
  # Once no user missed it, the LLM is let rest (a call without new
  # sessions plans no one: nothing missed, no hurry).
  assert planner.hurried[-1] is False
  planner.close()


def test_graph_environment_rejects_actions_outside_the_mask():
  env = tf_environment.make_planned_tf_env(planner="heuristic", num_users=2,
                                           seed=0, num_items=40)
  env.reset()
  mask = env.current_time_step().observation["mask"].numpy()
  outside = np.argmin(mask, axis=1).astype(np.int32)
  with pytest.raises(tf.errors.InvalidArgumentError, match="outside its user"):
    env.step(tf.constant(outside))
