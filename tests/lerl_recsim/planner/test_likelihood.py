"""The likelihood answer: category scores read from a model's
log-probabilities, and the plans they give."""

from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Any

import numpy as np
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from lerl_recsim import planner_environment, tf_environment
from lerl_recsim.planner import (HeuristicPlanner, PlanRules, Planner,
                                 PromptConfig, StepRecord, UserHistory)
from lerl_recsim.planner.heuristic import histories_to_steps
from lerl_recsim.planner.likelihood import (ANSWER_PREFIX, CategoryScores,
                                            first_name_probabilities)
from lerl_recsim.planner.validation import PlanParseError
from lerl_recsim.scenarios.catalogue import default_catalogue
from tests.conftest import SCENARIO, assert_same, collect

CAT = default_catalogue()
NAMES = CAT.category_names
LIKELIHOOD = PromptConfig(history_window=1, show_totals=False,
                          answer="likelihood", score_shortlist=20)


def tokens(name: str) -> list[str]:
  """A made-up tokenizer: the first letter, then chunks of 4 characters
  (the closing quote included), so that several names share a first token
  (t: tennis, tv series, travel, technology) and the walk must go deeper."""
  text = name + '"'
  return [text[0]] + [text[i:i + 4] for i in range(1, len(text), 4)]


class ScoringFake(BaseChatModel):
  """Continues `{"categories": ["` + prefix with the next-token
  distribution of a model that names category i first with probability
  `probabilities[i]` and starts with "Music" otherwise (test double)."""

  probabilities: dict = {}
  top: int = 64
  requests: list = []

  @property
  def _llm_type(self) -> str:
    return "scoring-fake"

  def _generate(self, messages: list[BaseMessage], stop: Any = None,
                run_manager: Any = None, **kwargs: Any) -> ChatResult:
    prefill = messages[-1].content
    assert isinstance(messages[-1], AIMessage) and prefill.startswith(
        ANSWER_PREFIX)
    assert kwargs["logprobs"] and kwargs["max_tokens"] == 1
    prefix = prefill[len(ANSWER_PREFIX):]
    self.requests.append(prefix)
    next_mass: dict[str, float] = {}
    leak = 1.0 - sum(self.probabilities.values())
    if not prefix and leak > 0:
      next_mass["Music"] = leak
    for name, p in self.probabilities.items():
      parts = tokens(name)
      for depth in range(len(parts)):
        if "".join(parts[:depth]) == prefix:
          next_mass[parts[depth]] = next_mass.get(parts[depth], 0.0) + p
    total = sum(next_mass.values())
    ranked = sorted(next_mass.items(), key=lambda kv: -kv[1])[:self.top]
    content = [{"token": ranked[0][0], "logprob": 0.0,
                "top_logprobs": [{"token": t, "logprob": math.log(m / total)}
                                 for t, m in ranked]}]
    message = AIMessage(content=ranked[0][0],
                        response_metadata={"logprobs": {"content": content}})
    return ChatResult(generations=[ChatGeneration(message=message)])


def probabilities(**named: float) -> dict[str, float]:
  return {name.replace("_", " "): p for name, p in named.items()}


def history(*steps: tuple[tuple[int, ...], float]) -> UserHistory:
  records = tuple(StepRecord(cats, e, e > 0) for cats, e in steps)
  return UserHistory(steps=records, session_length=len(records),
                     cumulative_reward=sum(e for _, e in steps))


def test_the_walk_recovers_every_names_probability_through_shared_tokens():
  target = probabilities(tennis=0.3, travel=0.1, technology=0.05, tv_series=0.05,
                         jazz=0.2, football=0.1, fitness=0.05)
  model = ScoringFake(probabilities=target, requests=[])
  mass = first_name_probabilities(model, [], NAMES, min_probability=1e-6,
                                  max_requests=50)
  expected = np.array([target.get(name, 0.0) for name in NAMES])
  np.testing.assert_allclose(mass, expected, atol=1e-12)
  # The root, then "t" and "f" (shared first letters); "te" is no token
  # of this tokenizer, so tennis and technology part at their second one.
  assert model.requests[0] == "" and set(model.requests) == {"", "t", "f"}


def test_a_cut_walk_gives_lower_bounds_and_asks_the_likeliest_prefix_first():
  target = probabilities(tennis=0.3, travel=0.1, jazz=0.2, football=0.1,
                         fitness=0.05)
  model = ScoringFake(probabilities=target, requests=[])
  mass = first_name_probabilities(model, [], NAMES, max_requests=2)
  by_name = dict(zip(NAMES, mass))
  # Jazz is the only name starting with "j": counted at the root. "t"
  # (0.4) is followed before "f" (0.15), which the cut leaves out.
  assert model.requests == ["", "t"]
  assert by_name["jazz"] == pytest.approx(0.2)
  assert by_name["tennis"] == pytest.approx(0.3)
  assert by_name["travel"] == pytest.approx(0.1)
  assert by_name["football"] == by_name["fitness"] == 0.0


def test_prefixes_below_min_probability_are_not_followed():
  target = probabilities(tennis=0.3, football=0.0005, fitness=0.0004)
  model = ScoringFake(probabilities=target, requests=[])
  first_name_probabilities(model, [], NAMES, min_probability=1e-3)
  assert "f" not in model.requests and "t" in model.requests


def test_only_the_top_logprobs_tokens_count():
  target = probabilities(jazz=0.5, rock=0.3, movies=0.2)
  model = ScoringFake(probabilities=target, top=2, requests=[])
  by_name = dict(zip(NAMES, first_name_probabilities(model, [], NAMES,
                                                     top_logprobs=2)))
  assert by_name["jazz"] == pytest.approx(0.5)
  assert by_name["rock"] == pytest.approx(0.3)
  assert by_name["movies"] == 0.0


@pytest.mark.parametrize("entry, found", [
    ({"token": "jazz", "logprob": 0.5}, "0.5"),
    ({"token": 7, "logprob": -1.0}, "7"),
    ({"token": "jazz", "logprob": "high"}, "high"),
])
def test_values_that_are_not_log_probabilities_are_a_parse_error(entry, found):
  class Lying(ScoringFake):
    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
      content = [{"token": "x", "logprob": 0.0, "top_logprobs": [entry]}]
      message = AIMessage(content="x",
                          response_metadata={"logprobs": {"content": content}})
      return ChatResult(generations=[ChatGeneration(message=message)])

  with pytest.raises(PlanParseError, match=f"log-probability entry .*{found}"):
    first_name_probabilities(Lying(), [], NAMES)


def test_scores_plan_takes_the_best_of_the_shortlist_ties_in_its_order():
  scores = CategoryScores((0.0, 0.5, 0.0, 0.2, 0.0, 0.5))
  assert scores.plan([0, 2, 3, 4], 3) == (3, 0, 2)
  assert scores.plan([5, 1, 3, 0], 2) == (5, 1)


def likelihood_planner(target: dict[str, float], **options: Any) -> Planner:
  config = dataclasses.replace(LIKELIHOOD, **options)
  return Planner(ScoringFake(probabilities=target, requests=[]), CAT,
                 prompt_config=config, reflections=None)


ROCK, JAZZ, TENNIS = (NAMES.index(n) for n in ("rock", "jazz", "tennis"))


def test_plans_are_the_best_scored_categories_without_saturated_ones():
  target = probabilities(jazz=0.3, rock=0.2, tennis=0.1, movies=0.09,
                         cooking=0.08, science=0.07, politics=0.06,
                         travel=0.05, history=0.02, fitness=0.01)
  planner = likelihood_planner(target)
  # Rock was shown at each of the last 3 steps: saturated, never planned.
  user = history(((ROCK, JAZZ), 2.0), ((ROCK,), 1.0), ((ROCK, TENNIS), 0.5))
  plan = planner.plan([user])[0]
  by_score = [NAMES.index(n) for n in target if n != "rock"]
  assert plan == tuple(by_score[:9])
  assert planner.metrics()["llm_plans"] == 1


def test_with_a_shortlist_of_the_plan_size_the_heuristic_decides_alone():
  target = probabilities(jazz=0.6, rock=0.4)
  planner = likelihood_planner(target, score_shortlist=9)
  heuristic = HeuristicPlanner(CAT, PlanRules())
  users = [history(((ROCK, JAZZ), 2.0), ((TENNIS,), 0.0)),
           history(((JAZZ,), 5.0)), history()]
  for plan, expected in zip(planner.plan(users), heuristic.plan(users)):
    assert sorted(plan) == sorted(expected)


def test_users_of_one_situation_share_one_scoring_but_keep_their_shortlists():
  target = probabilities(jazz=0.5, rock=0.5)
  planner = likelihood_planner(target, score_shortlist=10)
  # The same last step (the situation) after different earlier steps.
  a = history(((TENNIS,), 5.0), ((TENNIS,), 5.0), ((JAZZ,), 1.0))
  b = history(((ROCK,), 5.0), ((ROCK,), 5.0), ((JAZZ,), 1.0))
  assert planner.prompt_key(a) == planner.prompt_key(b)
  requests = len(planner._model.requests)
  plan_a, plan_b = planner.plan([a, b])
  assert planner.metrics()["shared_requests"] == 1
  picks = planner.fallback.batch.picks(histories_to_steps([a, b], 20))
  shortlists = picks.numpy()[:, :10]
  assert set(plan_a) <= set(shortlists[0]) and set(plan_b) <= set(shortlists[1])
  assert len(plan_a) == len(plan_b) == 9
  assert len(planner._model.requests) > requests


def test_a_backend_without_log_probabilities_falls_back_counted():
  planner = Planner(FakeListChatModel(responses=['{"categories": ["jazz"]}']),
                    CAT, prompt_config=LIKELIHOOD, reflections=None)
  user = history(((JAZZ,), 1.0))
  assert planner.plan([user]) == planner.fallback.plan([user])
  assert planner.metrics()["fallback_parse_error"] == 1


def test_no_probability_on_any_name_is_an_invalid_plan():
  planner = likelihood_planner({})
  planner.plan([history(((JAZZ,), 1.0))])
  assert planner.metrics()["fallback_invalid_plan"] == 1


def test_saved_state_keeps_the_scores_in_memory():
  target = probabilities(jazz=0.5, rock=0.25, tennis=0.25)
  planner = likelihood_planner(target)
  user = history(((JAZZ,), 1.0))
  plan = planner.plan([user])
  resumed = likelihood_planner({})  # would fall back if it asked
  resumed.load_saved_state(planner.saved_state())
  assert resumed.plan([user]) == plan
  assert resumed.metrics()["fallbacks"] == 0


@pytest.mark.parametrize("options, message", [
    ({"answer": "score"}, "answer='score'; expected one of list, likelihood"),
    ({"answer": "likelihood"}, "score_shortlist=None with answer='likelihood'"),
    ({"score_shortlist": 12}, "score_shortlist=12 with answer='list'"),
    ({"answer": "likelihood", "score_shortlist": 12, "shortlist_size": 12},
     "shortlist_size=12 lists candidates"),
])
def test_bad_answer_settings_are_refused(options, message):
  with pytest.raises(ValueError, match=message):
    PromptConfig(**options)


@pytest.mark.parametrize("size", [8, 21])
def test_a_score_shortlist_outside_plan_size_to_catalogue_is_refused(size):
  with pytest.raises(ValueError, match=f"score_shortlist={size} must lie in "
                     r"\[max_categories=9, 20 categories\]"):
    Planner(ScoringFake(), CAT, reflections=None,
            prompt_config=PromptConfig(answer="likelihood",
                                       score_shortlist=size))


class HashScoringFake(ScoringFake):
  """A ScoringFake whose probabilities depend only on the prompt (a CRC of
  its text, the answer's start left out): six names share the mass, the
  rest tie at zero, and one situation in five gets a reply without
  log-probabilities (a fallback)."""

  def _generate(self, messages, stop=None, run_manager=None, **kwargs):
    text = "\n".join(str(m.content) for m in messages[:-1])
    code = zlib.crc32(text.encode())
    if code % 5 == 0:
      return ChatResult(generations=[ChatGeneration(
          message=AIMessage(content="jazz"))])
    rng = np.random.default_rng(code)
    chosen = rng.choice(len(NAMES), 6, replace=False)
    self.probabilities = dict(zip([NAMES[i] for i in chosen],
                                  rng.dirichlet(np.ones(6)) * 0.9))
    return super()._generate(messages, stop, run_manager, **kwargs)


def test_graph_environment_waiting_repeats_the_python_one():
  def planner() -> Planner:
    config = dataclasses.replace(planner_environment.SCENARIO_PROMPT_CONFIG,
                                 answer="likelihood", score_shortlist=12)
    return Planner(HashScoringFake(requests=[]), CAT, prompt_config=config,
                   reflections=None)

  args = dict(replan_every=1, num_users=6, seed=1, **SCENARIO)
  py_env = planner_environment.make_planned_env(planner=planner(), **args)
  graph_env = tf_environment.make_planned_tf_env(planner=planner(), **args)
  py, graph = collect(py_env, 60), collect(graph_env, 60)
  assert_same(py, graph)
  py_counts, graph_counts = (py_env.planner_metrics(),
                             graph_env.planner_metrics())
  for key in ("llm_calls", "llm_plans", "planned_users", "fallbacks"):
    assert graph_counts[key] == py_counts[key], key
  assert 0 < graph_counts["fallbacks"] < graph_counts["llm_plans"]
  # Table hits inside the graph: users of stored situations planned there.
  assert graph_counts["cache_hits"] > 0
