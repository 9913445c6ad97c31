r"""How many distinct prompt situations users meet: LLM calls from a cold cache.

Waiting for every plan from a cold cache, an LLM planner asks the model
once per distinct situation (`Planner.prompt_key`), so distinct situations
per 1,000 user-steps are its LLM calls per 1,000 user-steps (lessons aside).
This counts them for several prompt settings at once, without a model: the
heuristic planner plans (its plans, not an LLM's, drive the users), and
every planned user's situation is keyed under each setting. The scripted
diversifying and oracle policies act, one fresh session per user, as in
bench/plan_handicap.py. Target: at most 50 per 1,000 user-steps.

  python bench/situation_count.py --seed=100 --num_sessions=128
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Sequence

from absl import app, flags

import lerl_recsim
from lerl_recsim import evaluation, planner_environment
from lerl_recsim.agents import networks, scripted_policies
from lerl_recsim.experiments import compare
from lerl_recsim.planner import Planner, UserHistory
from lerl_recsim.planner.backends import make_chat_model

FLAGS = flags.FLAGS
flags.DEFINE_list("exit_rules",
                  ["satisfaction", "temper", "category_window:dorl"],
                  "Exit rules, each optionally with a preset (as lerl-compare).")
flags.DEFINE_integer("num_sessions", 128, "Fresh users, one session each.")
flags.DEFINE_integer("seed", 0, "Seed of users, heuristic and policies.")
flags.DEFINE_integer("replan_every", planner_environment.DEFAULT_REPLAN_EVERY,
                     "Steps between a user's plans.")

POLICIES = ("diversifying", "oracle")
TARGET = 50.0
COVERAGE = 0.9
_SCENARIO = planner_environment.SCENARIO_PROMPT_CONFIG
# The prompt settings compared, each spelt out (the scenario default is
# marked where it is one of them): the last step with and without the
# session's length and reward, the last 4 steps (the DORL window), and
# those with a shortlist of 12 of the heuristic's picks.
SETTINGS = {
    "1 step + totals": dataclasses.replace(
        _SCENARIO, history_window=1, show_totals=True, shortlist_size=None),
    "1 step": dataclasses.replace(
        _SCENARIO, history_window=1, show_totals=False, shortlist_size=None),
    "4 steps": dataclasses.replace(
        _SCENARIO, history_window=4, show_totals=False, shortlist_size=None),
    "4 steps + shortlist of 12": dataclasses.replace(
        _SCENARIO, history_window=4, show_totals=False, shortlist_size=12),
}
SETTINGS = {(f"{name} (default)" if config == _SCENARIO else name): config
            for name, config in SETTINGS.items()}


def situations_covering(counts: collections.Counter, share: float) -> int:
  """How many of the most frequent situations hold `share` of the plans."""
  total, covered = sum(counts.values()), 0
  for rank, (_, count) in enumerate(counts.most_common(), start=1):
    covered += count
    if covered >= share * total:
      return rank
  return 0


class CountingPlanner:
  """Plans with the heuristic and records each planned user's situation
  under every setting (the model is never asked)."""

  def __init__(self, env: Any, seed: int) -> None:
    catalogue = env.scenario.catalogue
    model = make_chat_model("fake", responses=["unused"])
    self.keyers = {name: Planner(model, catalogue, prompt_config=config,
                                 reflections=None, seed=seed)
                   for name, config in SETTINGS.items()}
    self.heuristic = next(iter(self.keyers.values())).fallback
    self.seen: dict[str, collections.Counter] = {
        name: collections.Counter() for name in SETTINGS}

  def plan(self, histories: Sequence[UserHistory],
           wait: bool = True) -> list[tuple[int, ...]]:
    del wait
    for name, keyer in self.keyers.items():
      self.seen[name].update(keyer.prompt_keys(histories))
    return self.heuristic.plan(histories)

  def end_sessions(self, histories: Sequence[UserHistory],
                   wait: bool = True) -> None:
    del histories, wait

  def metrics(self) -> dict[str, float]:
    return {}


def main(argv: list[str]) -> None:
  del argv
  try:
    rules = compare.parse_exit_rules(FLAGS.exit_rules)
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  print(f"{FLAGS.num_sessions} users, seed {FLAGS.seed}, replan every "
        f"{FLAGS.replan_every}; distinct situations per 1,000 user-steps "
        f"(target <= {TARGET:.0f}), and [how many of the most frequent hold "
        f"{COVERAGE:.0%} of the plans]")
  for rule in rules:
    for name in POLICIES:
      base = lerl_recsim.make_env(num_users=FLAGS.num_sessions, seed=FLAGS.seed,
                                  exit_rule=rule.name, exit_params=rule.params)
      counter = CountingPlanner(base, FLAGS.seed)
      env = planner_environment.make_planned_env(
          base, counter, FLAGS.replan_every, seed=FLAGS.seed)
      policy = scripted_policies.SCRIPTED_POLICIES[name](
          networks.base_environment(env), seed=FLAGS.seed)
      evaluation.evaluate_sessions(env, policy)
      steps = env.planner_metrics()["user_steps"]
      counts = ", ".join(
          f"{setting}: {1000.0 * len(seen) / steps:.1f} "
          f"[{situations_covering(seen, COVERAGE)}]"
          for setting, seen in counter.seen.items())
      print(f"{rule.label:22} {name:12} {steps:.0f} user-steps; {counts}",
            flush=True)


if __name__ == "__main__":
  app.run(main)
