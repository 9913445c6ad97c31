"""Prompt options: four steps, a shortlist of candidates, situation
features in the graph that agree with the prompt text, and the Python and
graph planned environments planning alike with them."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import zlib

import numpy as np
import pytest
import tensorflow as tf
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from lerl_recsim import planner_environment, tf_environment
from lerl_recsim.planner import (Planner, PlanRules, PromptConfig,
                                 ReflectionPool, StepRecord, UserHistory,
                                 make_planner)
from lerl_recsim.planner.heuristic import histories_to_steps
from lerl_recsim.planner.prompt import plan_schema
from lerl_recsim.planner.situations import situation_keys
from lerl_recsim.scenarios.catalogue import default_catalogue
from tests.conftest import SCENARIO, assert_same, collect

CAT = default_catalogue()
# The 4-step prompt with a shortlist of 12 (an option; the default shows
# one step and no shortlist, for cost).
CONFIG = dataclasses.replace(planner_environment.SCENARIO_PROMPT_CONFIG,
                             history_window=4, shortlist_size=12)
NAMES = CAT.category_names
# Plan sizes of the default rules.
LOW, HIGH = PlanRules().min_categories, PlanRules().max_categories


def steps(*shown: tuple[str, float]) -> tuple[StepRecord, ...]:
  return tuple(StepRecord((CAT.index(name),), e, e > 0) for name, e in shown)


def history(*shown: tuple[str, float]) -> UserHistory:
  return UserHistory(steps(*shown), len(shown), sum(e for _, e in shown))


LONG = history(("rock", 0.9), ("jazz", 0.0), ("tennis", 0.3), ("movies", 0.7),
               ("cooking", 0.65), ("science", 0.0))


def reply(*names: str) -> str:
  return json.dumps({"categories": list(names)})


def fake_planner(*responses: str, config: PromptConfig = CONFIG) -> Planner:
  return make_planner("fake", CAT,
                      model_options={"responses": list(responses) or ["-"]},
                      prompt_config=config)


def test_prompt_shows_the_last_four_steps_and_the_shortlist():
  planner = fake_planner()
  prompt_input = planner.prompt_input(LONG)
  variables = prompt_input["prompt"]
  assert variables["recent"].splitlines() == [
      "1. tennis -> clicked, engagement low",
      "2. movies -> clicked, engagement high",
      "3. cooking -> clicked, engagement high",
      "4. science -> no click, engagement none"]
  shortlist = prompt_input["choices"]
  assert len(shortlist) == CONFIG.shortlist_size
  assert list(shortlist) == sorted(shortlist)  # catalogue order
  listed = re.findall(r"^- ([a-z -]+) \(", variables["candidates"], re.M)
  assert listed == [NAMES[c] for c in shortlist]
  # The heuristic's own plan is always a valid answer.
  assert set(planner.fallback.plan_one(LONG)) <= set(shortlist)
  # A candidate seen in the history carries its engagement level.
  seen = [c for c in shortlist if NAMES[c] in ("rock", "jazz", "tennis")]
  for c in seen:
    assert f"- {NAMES[c]} (" in variables["candidates"]
    assert "not shown yet" not in next(
        line for line in variables["candidates"].splitlines()
        if line.startswith(f"- {NAMES[c]} ("))
  # Totals are not shown.
  assert "Session so far" not in variables["stats"]


def test_schema_enumerates_only_the_shortlist():
  shortlist = (1, 4, 5, 9, 12, 13, 14, 15, 16, 17, 18, 19)
  enum = plan_schema(CAT, PlanRules(), choices=shortlist)[
      "properties"]["categories"]["items"]["enum"]
  assert enum == [NAMES[c] for c in shortlist]


def test_reply_off_the_shortlist_is_rejected_and_counted_as_fallback():
  planner = fake_planner(reply("placeholder"))
  shortlist = planner.prompt_input(LONG)["choices"]
  inside = [NAMES[c] for c in shortlist][:LOW]
  outside = next(n for i, n in enumerate(NAMES) if i not in shortlist)
  planner = fake_planner(reply(*inside[:LOW - 1], outside))
  assert planner.plan([LONG]) == [planner.fallback.plan_one(LONG)]
  assert planner.metrics()["fallback_invalid_plan"] == 1
  # A different user's reply inside the shortlist is taken.
  other = history(("rock", 0.9))
  other_list = planner.prompt_input(other)["choices"]
  planner = fake_planner(reply(*[NAMES[c] for c in other_list][:LOW]))
  assert planner.plan([other]) == [tuple(other_list[:LOW])]
  assert planner.metrics()["fallbacks"] == 0


def test_shortlist_size_is_checked():
  with pytest.raises(ValueError, match="shortlist_size must be None or an int"):
    PromptConfig(shortlist_size=0)
  with pytest.raises(ValueError, match="shortlist_size=5 must lie in"):
    fake_planner(config=dataclasses.replace(CONFIG, shortlist_size=5))
  with pytest.raises(ValueError, match="shortlist_size=21 must lie in"):
    fake_planner(config=dataclasses.replace(CONFIG, shortlist_size=21))


def test_whole_catalogue_and_no_shortlist_for_strong_models():
  wide = fake_planner(config=dataclasses.replace(CONFIG, shortlist_size=20))
  assert wide.prompt_input(LONG)["choices"] == tuple(range(20))
  off = fake_planner(config=dataclasses.replace(CONFIG, shortlist_size=None))
  prompt_input = off.prompt_input(LONG)
  assert prompt_input["choices"] is None
  assert prompt_input["prompt"]["candidates"] == (
      "Any category of the catalogue may be chosen.")


# Situation features: equal exactly when the prompts are equal.

HISTORIES = [
    LONG,
    # Engagement 0.9 and 0.7 are both "high": the same prompt as LONG...
    history(("rock", 0.9), ("jazz", 0.0), ("tennis", 0.3), ("movies", 0.9),
            ("cooking", 0.65), ("science", 0.0)),
    # ... but not as "low".
    history(("rock", 0.9), ("jazz", 0.0), ("tennis", 0.3), ("movies", 0.5),
            ("cooking", 0.65), ("science", 0.0)),
    # A different category in the window.
    history(("rock", 0.9), ("jazz", 0.0), ("tennis", 0.3), ("movies", 0.7),
            ("travel", 0.65), ("science", 0.0)),
    # Older steps outside the window: only the shortlist and levels differ.
    history(("jazz", 0.9), ("rock", 0.0), ("tennis", 0.3), ("movies", 0.7),
            ("cooking", 0.65), ("science", 0.0)),
    history(("hip-hop", 0.9), ("jazz", 0.0), ("tennis", 0.3), ("movies", 0.7),
            ("cooking", 0.65), ("science", 0.0)),
    # Session length and reward are not shown.
    UserHistory(LONG.steps, 30, 12.0),
    history(("rock", 0.2)),
    history(("rock", 0.3)),
    history(("rock", 0.0)),
    history(("tennis", 0.3)),
    UserHistory(),
    # Saturated: rock at each of the last 3 steps.
    history(("jazz", 0.5), ("rock", 0.5), ("rock", 0.5), ("rock", 0.5)),
    history(("jazz", 0.5), ("rock", 0.5), ("rock", 0.5), ("rock", 0.5),
            ("rock", 0.5)),
]


def graph_keys(planner: Planner, histories: list[UserHistory]) -> list[int]:
  steps = histories_to_steps(histories, CAT.num_categories)
  users = int(steps.valid.shape[0])
  length = np.zeros(users, np.int64)
  reward = np.zeros(users, np.float64)
  length[:len(histories)] = [h.session_length for h in histories]
  reward[:len(histories)] = [h.cumulative_reward for h in histories]
  keys = situation_keys(
      steps, tf.constant(length), tf.constant(reward), planner.prompt_config,
      planner.rules, planner.fallback.batch)
  return keys.numpy()[:len(histories)].tolist()


def test_situation_features_are_equal_exactly_when_prompts_are():
  planner = fake_planner()
  planner.reflections = None  # lessons are not part of the situation
  prompts = [tuple(sorted(x["prompt"].items()))
             for x in planner.prompt_inputs(HISTORIES)]
  keys = graph_keys(planner, HISTORIES)
  assert prompts[0] == prompts[1] and prompts[0] == prompts[6]
  assert prompts[0] != prompts[2] and prompts[0] != prompts[3]
  assert prompts[0] != prompts[4]
  for i, j in itertools.combinations(range(len(HISTORIES)), 2):
    assert (keys[i] == keys[j]) == (prompts[i] == prompts[j]), (i, j)


# The Python and graph planned environments, with a shortlist (helpers as in
# test_tf_environment.py, which --import-mode=importlib keeps from import).

class ShortlistHashChatModel(BaseChatModel):
  """A fake LLM whose reply depends only on the prompt (a CRC of its text):
  LOW-HIGH of the candidates the prompt lists; one reply in five names a
  category off the list, to exercise fallbacks."""

  @property
  def _llm_type(self) -> str:
    return "shortlist-hash"

  def _generate(self, messages, stop=None, run_manager=None, **kwargs):
    text = "\n".join(str(m.content) for m in messages)
    code = zlib.crc32(text.encode())
    listed = re.findall(r"^- ([a-z -]+) \(", text, re.M)
    if "Choose the categories" not in text:
      reply_text = f"lesson {code % 7}"
    else:
      picked = [listed[(code >> i) % len(listed)] for i in range(len(listed))]
      names = list(dict.fromkeys(picked))[:LOW + code % (HIGH - LOW + 1)]
      names += [n for n in listed if n not in names][:max(LOW - len(names), 0)]
      if code % 5 == 0:
        names[-1] = next(n for n in NAMES if n not in listed)
      reply_text = reply(*names)
    return ChatResult(generations=[ChatGeneration(
        message=AIMessage(content=reply_text))])


def shortlist_planner() -> Planner:
  return Planner(ShortlistHashChatModel(), CAT, prompt_config=CONFIG,
                 reflections=ReflectionPool(), reflect_every=3)


@pytest.mark.parametrize("replan_every", [1, 2])
def test_graph_environment_plans_as_the_python_one_with_a_shortlist(
    replan_every):
  args = dict(replan_every=replan_every, num_users=6, seed=1, **SCENARIO)
  py_env = planner_environment.make_planned_env(planner=shortlist_planner(),
                                                **args)
  graph_env = tf_environment.make_planned_tf_env(planner=shortlist_planner(),
                                                 **args)
  assert_same(collect(py_env, 60), collect(graph_env, 60))
  py_counts, graph_counts = (py_env.planner_metrics(),
                             graph_env.planner_metrics())
  for key in ("llm_calls", "llm_plans", "planned_users", "fallbacks",
              "fallback_invalid_plan", "reflection_pool_size"):
    assert graph_counts[key] == py_counts[key], key
  assert 0 < graph_counts["fallback_invalid_plan"] < graph_counts["llm_plans"]
