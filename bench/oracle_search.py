r"""The planning oracle against the greedy oracle and `diversifying`, same users.

For finding out where the search falls short of a ceiling (under `budget`
it is below the greedy oracle; on `movielens` under `category_window`,
below `diversifying`). Prints the cumulative reward, interaction length,
per-step reward and categories per session (mean ± 95% CI) of the greedy
oracle, the planning oracle and the scripted `diversifying` policy, each
one's wall time, and the resolved scenario configuration.

  python bench/oracle_search.py --exit_rule=budget --seed=100
  python bench/oracle_search.py --exit_rule=budget --seed=100 --interest_step=0
  python bench/oracle_search.py --exit_rule=budget --seed=100 --horizon=20
  LERL_DATA_DIR=../shared/data/ml-latest-small python bench/oracle_search.py \
      --scenario=movielens --exit_rule=category_window:dorl \
      --continuations=fresh_greedy --fresh_window=3
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Sequence

from absl import app, flags

import lerl_recsim
from lerl_recsim import evaluation, lookahead, metrics
from lerl_recsim.agents import scripted_policies
from lerl_recsim.experiments import comparison

FLAGS = flags.FLAGS
flags.DEFINE_string("scenario", "interest_evolution", "Scenario name.")
flags.DEFINE_string("exit_rule", "budget", "Exit rule, optionally with a "
                    "preset: `category_window:dorl`.")
flags.DEFINE_integer("num_users", 128, "Fresh users, one session each.")
flags.DEFINE_integer("seed", 100, "Seed of users and policies.")
flags.DEFINE_integer("horizon", lookahead.SearchSettings.horizon,
                     "Steps each simulated future looks ahead.")
flags.DEFINE_integer("samples", lookahead.SearchSettings.samples,
                     "Futures per candidate.")
flags.DEFINE_list("continuations", list(lookahead.SearchSettings.continuations),
                  "The policies of a future's later steps, each valued "
                  f"(any of {', '.join(lookahead.CONTINUATIONS)}; "
                  "lookahead.SearchSettings).")
flags.DEFINE_integer("fresh_window", lookahead.SearchSettings.fresh_window,
                     "Steps whose categories make an item stale.")
flags.DEFINE_integer("candidates", lookahead.SearchSettings.candidates,
                     "First items searched per user.")
flags.DEFINE_float("interest_step", None, "Overrides the users' "
                   "interest_step (how far interests move towards what is "
                   "shown); the scenario's default if unset.")

METRICS = ("cumulative_reward", "interaction_length", "step_reward",
           "category_coverage")


def main(argv: Sequence[str]) -> None:
  del argv
  overrides = ({} if FLAGS.interest_step is None else
               {"user_params": {"interest_step": FLAGS.interest_step}})
  try:
    settings = lookahead.SearchSettings(
        horizon=FLAGS.horizon, samples=FLAGS.samples,
        continuations=tuple(FLAGS.continuations),
        fresh_window=FLAGS.fresh_window, candidates=FLAGS.candidates)
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  policies = {
      "oracle": lambda env: scripted_policies.OraclePolicy(env, seed=FLAGS.seed),
      "planning_oracle": lambda env: scripted_policies.PlanningOraclePolicy(
          env, seed=FLAGS.seed, settings=settings),
      "diversifying": lambda env: scripted_policies.DiversifyingPolicy(
          env, seed=FLAGS.seed)}
  rule = comparison.ExitRuleChoice.parse(FLAGS.exit_rule)
  config = None
  for name, make in policies.items():
    env = lerl_recsim.make_env(FLAGS.scenario, num_users=FLAGS.num_users,
                               seed=FLAGS.seed, exit_rule=rule.name,
                               exit_params=rule.params, **overrides)
    config = dict(env.config)
    start = time.perf_counter()
    summary = metrics.summarise(evaluation.evaluate_sessions(env, make(env)))
    seconds = time.perf_counter() - start
    print(f"{name:16s} " + "  ".join(
        f"{m} {summary[m]['mean']:.3f} ± {summary[m]['ci95']:.3f}"
        for m in METRICS) + f"  ({seconds:.0f} s)")
  print("search:", json.dumps(dataclasses.asdict(settings)))
  print("scenario:", json.dumps(config, default=str))


if __name__ == "__main__":
  app.run(main)
