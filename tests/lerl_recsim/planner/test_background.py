"""Planning in the background: the worker thread, the planner's provisional
plans, and a training environment that never waits for the LLM."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

import lerl_recsim
from lerl_recsim import planner_environment
from lerl_recsim.planner import (Planner, ReflectionPool, StepRecord,
                                 UserHistory)
from lerl_recsim.planner.background import BackgroundWorker
from lerl_recsim.planner.chat_models import LlamaCppChatModel
from lerl_recsim.scenarios.catalogue import default_catalogue
from tests.conftest import SMALL_PLANS

CAT = default_catalogue()
ROCK, JAZZ, TENNIS = (CAT.index(n) for n in ("rock", "jazz", "tennis"))


def reply(*names: str) -> str:
  return json.dumps({"categories": list(names)})


class GatedFake(FakeListChatModel):
  """Replies only once the test opens the gate; counts the prompts it got,
  and sets `asked` (if given) when one arrives. The replies come in turn
  across the model's copies (which share `calls`), as from one server."""
  gate: Any = None
  asked: Any = None
  down: Any = None  # an Event: while set, requests fail to connect
  calls: list = []

  def _call(self, *args: Any, **kwargs: Any) -> str:
    del args, kwargs
    if self.down is not None and self.down.is_set():
      raise ConnectionError("the server is down")
    if self.asked is not None:
      self.asked.set()
    assert self.gate.wait(30), "the test never opened the gate"
    self.calls.append(1)
    return self.responses[(len(self.calls) - 1) % len(self.responses)]


def gated_planner(*responses: str, **options: Any) -> tuple[Planner, threading.Event]:
  """A planner of small plans (SMALL_PLANS), as the replies here are."""
  gate = threading.Event()
  model = GatedFake(responses=list(responses), gate=gate, calls=[])
  return Planner(model, CAT, rules=SMALL_PLANS, **options), gate


def rock_history(reward: float = 4.0) -> UserHistory:
  return UserHistory((StepRecord((ROCK,), 0.9, True),), 1, reward)


# The worker.

def test_worker_answers_in_batches_dedupes_and_bounds_its_queue():
  batches = []
  gate = threading.Event()

  def run_batch(requests):
    gate.wait(30)
    batches.append(list(requests))
    return [r * 10 if r >= 0 else ValueError(f"bad {r}") for r in requests]

  worker = BackgroundWorker(run_batch, max_pending=3, batch_size=2)
  assert worker.submit("a", 1) and worker.submit("b", 2)
  assert not worker.submit("a", 1)  # already pending
  assert worker.submit("c", -1)
  assert not worker.submit("d", 4)  # queue full (3 pending)
  assert worker.pending == 3 and worker.drain() == []
  gate.set()
  assert worker.wait(30)
  finished = dict(worker.drain())
  assert finished["a"] == 10 and finished["b"] == 20
  assert isinstance(finished["c"], ValueError)
  assert worker.pending == 0
  assert sorted(len(b) for b in batches) in ([1, 2], [1, 1, 1], [2, 1])
  assert sum(len(b) for b in batches) == 3
  worker.close()


def test_a_crashing_batch_answers_every_request_with_its_error():
  def run_batch(requests):
    raise RuntimeError("model server died")

  worker = BackgroundWorker(run_batch)
  worker.submit("a", 1)
  worker.submit("b", 2)
  assert worker.wait(30)
  answers = dict(worker.drain())
  assert set(answers) == {"a", "b"}
  assert all(isinstance(e, RuntimeError) and "died" in str(e)
             for e in answers.values())
  worker.close()


def test_cancel_drops_queued_requests_and_close_answers_the_one_in_flight():
  started, gate = threading.Event(), threading.Event()

  def run_batch(requests):
    started.set()
    assert gate.wait(30)
    return requests

  worker = BackgroundWorker(run_batch, batch_size=1)
  for key in range(4):
    worker.submit(key, key)
  assert started.wait(30)  # request 0 is in flight, 1-3 queued
  assert sorted(worker.cancel()) == [1, 2, 3]
  assert worker.pending == 1
  gate.set()
  worker.close()
  assert dict(worker.drain()) == {0: 0}
  assert worker.pending == 0 and worker.wait(1)
  assert worker.submit(1, 1) and worker.wait(30)  # dropped keys may come back
  assert dict(worker.drain()) == {1: 1}
  worker.close()


def test_a_workers_busy_share_can_change_and_is_checked():
  worker = BackgroundWorker(lambda requests: requests, busy_share=0.25)
  assert worker.busy_share == 0.25
  worker.busy_share = 1.0
  assert worker.busy_share == 1.0
  with pytest.raises(ValueError, match=r"busy_share must lie in \(0, 1\], got 0"):
    worker.busy_share = 0
  assert worker.busy_share == 1.0


# The planner.

def test_hurry_lets_a_local_model_answer_without_rest_and_not_a_remote_one():
  local = Planner(LlamaCppChatModel(model_path="unused.gguf"), CAT,
                  reflections=None, local_busy_share=0.25)
  assert local._worker.busy_share == 0.25
  local.hurry(True)
  assert local._worker.busy_share == 1.0
  local.hurry(False)
  assert local._worker.busy_share == 0.25
  remote, _ = gated_planner(reply("jazz"), local_busy_share=0.25)
  remote.hurry(False)  # a remote model never rests
  assert remote._worker.busy_share == 1.0


def test_copies_of_a_local_model_share_one_lock_for_request_series():
  model = LlamaCppChatModel(model_path="unused.gguf")
  copy = model.model_copy(update={"cache": False})
  assert copy.exclusive() is model.exclusive()
  assert LlamaCppChatModel(model_path="unused.gguf").exclusive() is not (
      model.exclusive())

def test_unanswered_situations_get_the_heuristic_plan_until_the_llm_answers():
  planner, gate = gated_planner(reply("jazz", "tennis"))
  users = [rock_history(), rock_history()]  # one situation
  provisional = planner.plan(users, wait=False)
  assert provisional == planner.fallback.plan(users)
  m = planner.metrics()
  assert m["provisional_plans"] == 2 and m["llm_plans"] == 0
  assert m["background_pending"] == 1  # one request for both users
  assert planner.plan(users, wait=False) == provisional  # not asked twice
  gate.set()
  assert planner.flush(30)
  assert planner.plan(users, wait=False) == [(JAZZ, TENNIS)] * 2
  m = planner.metrics()
  assert m["llm_plans"] == 2 and m["provisional_plans"] == 4
  assert m["plan_llm_calls"] == 1
  assert m["planned_users"] == 6


def test_a_failed_background_request_falls_back_per_user_until_its_retry(
    backoff_clock):
  down = threading.Event()
  down.set()
  gate = threading.Event()
  model = GatedFake(responses=[reply("jazz", "tennis")], gate=gate, calls=[],
                    down=down)
  calls = model.calls
  planner = Planner(model, CAT, rules=SMALL_PLANS, retry_backoff_s=1.0)
  gate.set()
  users = [rock_history(), rock_history()]  # one situation
  planner.plan(users, wait=False)  # provisional; the request fails
  assert planner.flush(30)
  down.clear()  # the server is back, but the situation backs off
  again = planner.plan(users, wait=False)
  assert planner.flush(30)
  m = planner.metrics()
  assert again == planner.fallback.plan(users) and not calls
  assert m["provisional_plans"] == 2 and m["fallback_connection"] == 2
  assert m["failing_situations"] == 1
  backoff_clock.sleep(1.0)
  planner.plan(users, wait=False)  # asked again
  assert planner.flush(30)
  assert planner.plan(users, wait=False) == [(JAZZ, TENNIS)] * 2
  m = planner.metrics()
  assert m["retry_requests"] == 1 and len(calls) == 1
  assert (m["llm_plans"], m["provisional_plans"], m["fallbacks"]) == (2, 4, 2)
  assert m["failing_situations"] == 0


def test_a_reply_that_fails_validation_is_kept_and_not_asked_again():
  planner, gate = gated_planner("no json here", reply("jazz", "tennis"))
  gate.set()
  users = [rock_history(), rock_history()]
  planner.plan(users, wait=False)
  assert planner.flush(30)
  for _ in range(3):
    assert planner.plan(users, wait=False) == planner.fallback.plan(users)
  assert planner.flush(30)
  m = planner.metrics()
  assert m["plan_llm_calls"] == 1 and m["fallback_parse_error"] == 6
  assert m["provisional_plans"] == 2 and m["retry_requests"] == 0


def test_waiting_plans_equal_background_plans_once_answered():
  waited, gate = gated_planner(reply("jazz", "tennis"))
  gate.set()
  background, gate2 = gated_planner(reply("jazz", "tennis"))
  gate2.set()
  background.plan([rock_history()], wait=False)
  background.flush(30)
  assert (waited.plan([rock_history()]) ==
          background.plan([rock_history()], wait=False) == [(JAZZ, TENNIS)])


def test_background_lessons_land_in_the_pool_with_their_own_reward():
  planner, gate = gated_planner("Rock kept this user for 12 steps.",
                                reflections=ReflectionPool(capacity=10))
  planner.end_sessions([rock_history(reward=7.5)], wait=False)
  assert len(planner.reflections) == 0
  gate.set()
  assert planner.flush(30)
  assert [(e.lesson, e.cumulative_reward) for e in planner.reflections.entries] == [
      ("Rock kept this user for 12 steps.", 7.5)]
  assert planner.metrics()["reflections_written"] == 1


def test_lessons_dropped_before_they_are_answered_are_counted():
  gate, asked = threading.Event(), threading.Event()
  model = GatedFake(responses=[reply("jazz", "tennis")], gate=gate,
                    asked=asked, calls=[])
  planner = Planner(model, CAT, rules=SMALL_PLANS,
                    reflections=ReflectionPool(capacity=10),
                    max_concurrency=1)  # one request per batch
  planner.end_sessions([rock_history(r) for r in (1.0, 2.0, 3.0, 4.0)],
                       wait=False)
  assert asked.wait(30)  # the first lesson is in flight, three are queued
  planner.plan([rock_history()], wait=False)  # and a plan request
  assert planner.metrics()["background_pending"] == 5
  planner.cancel_background()
  assert planner.metrics()["reflections_dropped"] == 3
  assert planner.metrics()["background_pending"] == 1
  gate.set()
  planner.close()  # answers the lesson in flight and takes it in
  m = planner.metrics()
  assert (m["reflections_scheduled"], m["reflections_written"],
          m["reflection_failures"], m["reflections_dropped"]) == (4, 1, 0, 3)
  assert m["reflection_requests"] == 1 and m["background_pending"] == 0
  assert [e.cumulative_reward for e in planner.reflections.entries] == [1.0]
  # The dropped plan left nothing behind: its situation is asked again.
  planner.plan([rock_history()], wait=False)
  assert planner.metrics()["background_pending"] == 1
  assert planner.flush(30)
  assert planner.plan([rock_history()], wait=False) == [(JAZZ, TENNIS)]
  planner.close()
  assert planner.metrics()["reflections_dropped"] == 3  # nothing was queued


# The environment.

def test_training_environment_steps_while_the_llm_is_busy():
  planner, gate = gated_planner(*[reply("jazz", "tennis")] * 50)
  # Plans only at session start, where every user is in one situation.
  env = planner_environment.make_planned_env(
      planner=planner, num_users=4, seed=0, num_items=60,
      wait_for_planner=False, replan_every=1000)
  rng = np.random.default_rng(0)
  time_step = env.reset()

  def step(time_step):
    return env.step(np.array([rng.choice(np.flatnonzero(row))
                              for row in time_step.observation["mask"]],
                             np.int32))

  for _ in range(6):  # would block forever if the wrapper waited
    time_step = step(time_step)
  m = env.planner_metrics()
  assert m["llm_plans"] == 0 and m["provisional_plans"] == m["planned_users"]
  assert m["background_pending"] == 1 and m["plan_llm_calls"] == 1
  gate.set()
  assert planner.flush(30)
  for _ in range(300):  # until a new session starts with the LLM's plan
    time_step = step(time_step)
    if env.planner_metrics()["llm_plans"]:
      break
  assert env.planner_metrics()["llm_plans"] >= 1
  slot = next(s for s, first in enumerate(time_step.is_first()) if first)
  assert env.plans[slot][:2] == (JAZZ, TENNIS)
  planner.close()
