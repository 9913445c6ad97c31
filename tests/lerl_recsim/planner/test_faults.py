"""A misbehaving LLM server costs counted fallbacks, never a run.

The planner talks to a real OpenAI-compatible HTTP server on loopback
(`llm_server.LoopbackLLMServer`) through the `openai:` backend, and the
server hangs, errors, drops connections, sends unreadable responses or
replies, names categories outside the catalogue, or dies and comes back.
"""

from __future__ import annotations

import pytest

from tests.llm_server import LoopbackLLMServer
from lerl_recsim.experiments import run_config, train
from lerl_recsim.planner import (FALLBACK_CAUSES, Fallback, Planner,
                                 StepRecord, UserHistory, make_planner)

pytest.importorskip("langchain_openai")

CAUSE_OF_MODE = {"hang": "timeout", "error_500": "server_error",
                 "close": "connection", "invalid_body": "server_error",
                 "invalid_content": "parse_error",
                 "off_catalogue": "invalid_plan"}
# Three users in two situations: a fresh one (twice) and one after a step.
FRESH = UserHistory()
AFTER_ONE = UserHistory((StepRecord((0,), 0.9, True),), 1, 0.9)
USERS = [FRESH, AFTER_ONE, FRESH]
# The client's per-request timeout (hanging lasts longer): long enough that
# a good reply on a loaded machine is not cut off.
TIMEOUT_S = 2.0
# The planner's own time per request: far above the client's timeout and
# retry, so that a loaded machine cannot turn a slow good reply into a
# timeout. Only the test of the evaluation's wait budget sets it lower.
PLANNER_TIMEOUT_S = 30.0
BACKOFF_S = 2.0


def planner_for(server: LoopbackLLMServer, **options) -> Planner:
  options.setdefault("retry_backoff_s", BACKOFF_S)
  options.setdefault("timeout_s", PLANNER_TIMEOUT_S)
  planner = make_planner(
      "openai:loopback", model_options={"base_url": server.base_url,
                                        "timeout_s": TIMEOUT_S},
      reflections=None, **options)
  planner.fallback.plan(USERS)  # compiled now, not during a back-off
  return planner


def counted(planner: Planner) -> dict[str, float]:
  m = planner.metrics()
  assert m["llm_plans"] + m["provisional_plans"] + m["fallbacks"] == \
      m["planned_users"], m
  return {k: v for k, v in m.items() if k in (
      "llm_plans", "provisional_plans", "fallbacks", "planned_users",
      *(f"fallback_{c}" for c in FALLBACK_CAUSES)) and v}


@pytest.fixture(name="server")
def server_fixture():
  with LoopbackLLMServer(hang_s=3 * TIMEOUT_S) as server:
    yield server


@pytest.mark.parametrize("mode", sorted(CAUSE_OF_MODE))
def test_each_fault_falls_back_per_user_by_cause(server, mode, backoff_clock):
  """A failed request backs off and is retried once the server recovers; a
  reply that fails validation is the model's answer, kept and not asked
  again."""
  server.mode = mode
  planner = planner_for(server)
  assert planner.plan(USERS) == planner.fallback.plan(USERS)
  cause = CAUSE_OF_MODE[mode]
  assert counted(planner) == {"fallbacks": 3, f"fallback_{cause}": 3,
                              "planned_users": 3}
  # Backing off (or answered): the same users again cost no request.
  asked = server.requests
  assert planner.plan(USERS) == planner.fallback.plan(USERS)
  assert server.requests == asked
  assert counted(planner)[f"fallback_{cause}"] == 6
  server.mode = "ok"
  backoff_clock.sleep(BACKOFF_S)
  plans = planner.plan(USERS)
  if mode in ("invalid_content", "off_catalogue"):
    assert server.requests == asked and plans == planner.fallback.plan(USERS)
    assert counted(planner)[f"fallback_{cause}"] == 9
    return
  # After the back-off the situations are asked again, one request each.
  assert server.requests == asked + 2
  assert plans != planner.fallback.plan(USERS) and plans[0] == plans[2]
  assert counted(planner) == {"llm_plans": 3, "fallbacks": 6,
                              f"fallback_{cause}": 6, "planned_users": 9}
  m = planner.metrics()
  assert m["failing_situations"] == 0 and m["retry_requests"] == 2


def test_back_off_doubles_with_each_failure(server, backoff_clock):
  server.mode = "error_500"
  planner = planner_for(server, retry_backoff_s=0.3, max_backoff_s=1.0)
  waits = []
  for _ in range(4):
    [answer] = planner.llm_plans([FRESH])
    assert isinstance(answer, Fallback) and answer.cause == "server_error"
    waits.append(answer.retry_at - backoff_clock.monotonic())
    backoff_clock.sleep(waits[-1])
  # 0.3, 0.6, 1.0 (the cap), 1.0 seconds from each failure
  assert waits == pytest.approx([0.3, 0.6, 1.0, 1.0])


def test_background_counts_fallbacks_per_user_and_retries(server,
                                                          backoff_clock):
  server.mode = "error_500"
  planner = planner_for(server)
  assert planner.plan(USERS, wait=False) == planner.fallback.plan(USERS)
  assert counted(planner) == {"provisional_plans": 3, "planned_users": 3}
  assert planner.flush(timeout_s=30)
  asked = server.requests
  # The failed situations now count as fallbacks, per user, without asking.
  planner.plan(USERS, wait=False)
  planner.plan(USERS, wait=False)
  assert planner.flush(timeout_s=30) and server.requests == asked
  assert counted(planner) == {"provisional_plans": 3, "fallbacks": 6,
                              "fallback_server_error": 6, "planned_users": 9}
  server.mode = "ok"
  backoff_clock.sleep(BACKOFF_S)
  planner.plan(USERS, wait=False)  # asked again: provisional meanwhile
  assert planner.flush(timeout_s=30)
  plans = planner.plan(USERS, wait=False)
  assert plans != planner.fallback.plan(USERS)
  assert counted(planner) == {"provisional_plans": 6, "llm_plans": 3,
                              "fallbacks": 6, "fallback_server_error": 6,
                              "planned_users": 15}
  planner.close()


def test_a_server_that_dies_and_comes_back_is_used_again(server,
                                                         backoff_clock):
  planner = planner_for(server)
  assert counted(planner) == {}
  first = planner.plan([FRESH])
  server.stop()
  assert planner.plan([AFTER_ONE]) == planner.fallback.plan([AFTER_ONE])
  assert planner.plan([FRESH]) == first  # answered before: from memory
  server.start()
  backoff_clock.sleep(BACKOFF_S)
  later = planner.plan([AFTER_ONE])
  assert later != planner.fallback.plan([AFTER_ONE])
  assert counted(planner) == {"llm_plans": 3, "fallbacks": 1,
                              "fallback_connection": 1, "planned_users": 4}


def test_evaluation_waiting_is_bounded_in_total(server):
  """A hanging server delays an evaluation by its wait budget at most: the
  requests after it fall back at once."""
  server.mode = "hang"
  planner = planner_for(server, timeout_s=2 * TIMEOUT_S,
                        evaluation_wait_s=3 * TIMEOUT_S).evaluation_view()
  planner.start_wait_budget()
  histories = [UserHistory((StepRecord((c,), 0.5, True),), 1, 0.5)
               for c in range(6)]
  for history in histories:  # six situations, each would wait 2 * TIMEOUT_S
    planner.plan([history])
  m = counted(planner)
  assert m["fallback_wait_budget"] >= 3 and m["fallbacks"] == 6
  assert m["fallback_wait_budget"] + m.get("fallback_timeout", 0) == 6


def test_nothing_the_model_returns_is_run_or_trusted(server, tmp_path,
                                                     monkeypatch):
  """The reply names code and an unknown category: the plan is rejected as
  invalid; nothing is executed."""
  monkeypatch.chdir(tmp_path)
  server.mode = "off_catalogue"
  planner = planner_for(server)
  assert planner.plan([FRESH]) == planner.fallback.plan([FRESH])
  assert counted(planner)["fallback_invalid_plan"] == 1
  assert not list(tmp_path.iterdir())  # no file `executed`


def test_training_and_evaluation_go_on_through_every_fault(tmp_path,
                                                          monkeypatch):
  """A short `lerl` run (background planning, the fast path) against a
  server that answers some situations well and errs in every way on others,
  and dies for a while mid-run: it finishes, and every planned user is counted once, as the
  LLM's plan, provisional, or a fallback by cause."""
  faults = ("ok", "error_500", "ok", "close", "invalid_body", "ok",
            "invalid_content", "off_catalogue")
  with LoopbackLLMServer(mixed=faults) as server:
    monkeypatch.setenv("LERL_OPENAI_BASE_URL", server.base_url)
    run = run_config.RunConfig(
        agent="lerl", planner="openai:loopback", planner_mode="background",
        num_users=8, num_iterations=40, num_eval_sessions=12,
        eval_interval=20, checkpoint_interval=20, log_interval=20,
        scenario_overrides={"num_items": 40})
    server.die_after(8, down_s=1.0)
    summary = train.train_eval(run, str(tmp_path))
  assert summary["iterations"] == 40
  for phase in ("train", "eval"):
    counts = summary["planner"][phase]
    assert counts["llm_plans"] + counts["provisional_plans"] + \
        counts["fallbacks"] == counts["planned_users"] > 0, (phase, counts)
    assert counts["fallbacks"] == sum(
        counts[f"fallback_{c}"] for c in FALLBACK_CAUSES)
  seen = {c for phase in ("train", "eval") for c in FALLBACK_CAUSES
          if summary["planner"][phase][f"fallback_{c}"]}
  # Which situations meet which fault depends on timing (background
  # planning); each fault's own count is tested above.
  assert seen and seen <= {"server_error", "connection", "parse_error",
                           "invalid_plan"}, summary["planner"]
  assert summary["planner"]["train"]["llm_plans"] > 0
  assert server.deaths == 1  # it died mid-run and came back
