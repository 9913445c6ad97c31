r"""How much the planner's mask handicaps a good low-level policy.

For each exit rule, the scripted diversifying and oracle policies run on the
same fresh users (one whole session each) twice: inside the default planned
environment (`make_planned_env`, waiting for every plan, as evaluation
does) and flat, on the `make_env` environment under its wrapper. A planner
that only narrows choices should cost a good policy little: the target is a
loss of at most 5% of cumulative reward. Each planned run has a fresh
planner, so no result depends on the runs before it. Prints one line per
rule and policy: both means ± ci95, the change, and the planner's LLM calls
per 1,000 user-steps and share of LLM-made plans.

  python bench/plan_handicap.py
  python bench/plan_handicap.py --planner=heuristic
  python bench/plan_handicap.py --planner_cache=/tmp/planner.sqlite  # warm
  python bench/plan_handicap.py --history_window=1 --shortlist_size=0 \
      --show_totals  # the prompt before the shortlist

The oracle reads the hidden user state of the scenario environment under
the wrapper, and still picks only items of the wrapper's mask.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import app, flags

from lerl_recsim import evaluation, metrics, planner_environment
from lerl_recsim.planner import PlanRules
from lerl_recsim.agents import (comparison_setup, networks, run_config,
                                sanity_policies)

FLAGS = flags.FLAGS
flags.DEFINE_list("exit_rules",
                  ["satisfaction", "temper", "category_window:dorl"],
                  "Exit rules, each optionally with a preset (as lerl-compare).")
flags.DEFINE_string("planner", run_config.DEFAULT_PLANNER,
                    "Planner backend: embedded, heuristic, gguf:PATH, "
                    "openai:MODEL, ollama:MODEL.")
flags.DEFINE_integer("replan_every", planner_environment.DEFAULT_REPLAN_EVERY,
                     "Steps between a user's plans.")
flags.DEFINE_integer("num_sessions", 512, "Fresh users, one session each.")
flags.DEFINE_integer("seed", 0, "Seed of users, planner and policies.")
flags.DEFINE_string("planner_cache", None, "SQLite LLM cache of LLM planners.")
flags.DEFINE_integer("min_categories", PlanRules.min_categories,
                     "Fewest categories in a plan.")
flags.DEFINE_integer("max_categories", PlanRules.max_categories,
                     "Most categories in a plan (the heuristic's plan size).")
_PROMPT = planner_environment.SCENARIO_PROMPT_CONFIG
flags.DEFINE_integer("history_window", _PROMPT.history_window,
                     "LLM planners: steps shown in the prompt.")
flags.DEFINE_integer("shortlist_size", _PROMPT.shortlist_size,
                     "LLM planners: candidates offered (M); 0 offers the "
                     "whole catalogue without a list.")
flags.DEFINE_bool("show_totals", _PROMPT.show_totals,
                  "LLM planners: show session length and reward.")

POLICIES = ("diversifying", "oracle")
MAX_LOSS_PERCENT = 5.0


def cumulative_reward(env: Any, policy_name: str) -> dict[str, float]:
  """Mean and ci95 of one session per slot of `env` under the policy."""
  policy = sanity_policies.SANITY_POLICIES[policy_name](
      networks.base_environment(env), seed=FLAGS.seed)
  summary = metrics.summarise(evaluation.evaluate_sessions(env, policy))
  return summary["cumulative_reward"]


def flat_and_planned(policy_name: str, overrides: dict[str, Any]
                     ) -> tuple[dict[str, float], dict[str, float],
                                dict[str, float]]:
  """Flat and planned rewards of the policy, and the planner's metrics.

  The flat run uses the scenario environment under the wrapper: the same
  seed, hence the same users after each reset.
  """
  rules = PlanRules(min_categories=FLAGS.min_categories,
                    max_categories=FLAGS.max_categories)
  options: dict[str, Any] = {"rules": rules}
  if FLAGS.planner != "heuristic":
    options["prompt_config"] = dataclasses.replace(
        _PROMPT, history_window=FLAGS.history_window,
        shortlist_size=FLAGS.shortlist_size or None,
        show_totals=FLAGS.show_totals)
    if FLAGS.planner_cache:
      options["cache_path"] = FLAGS.planner_cache
  env = planner_environment.make_planned_env(
      planner=FLAGS.planner, replan_every=FLAGS.replan_every,
      num_users=FLAGS.num_sessions, seed=FLAGS.seed, wait_for_planner=True,
      planner_options=options, **overrides)
  try:
    flat = cumulative_reward(networks.base_environment(env), policy_name)
    return flat, cumulative_reward(env, policy_name), env.planner_metrics()
  finally:
    if hasattr(env.planner, "close"):
      env.planner.close()


def relative_change(flat: float, planned: float) -> float:
  """Percent change of the planned mean against the flat one."""
  return 100.0 * (planned - flat) / abs(flat)


def main(argv: list[str]) -> None:
  del argv
  try:
    rules = comparison_setup.parse_exit_rules(FLAGS.exit_rules)
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  print(f"{FLAGS.num_sessions} users, seed {FLAGS.seed}; planner "
        f"{FLAGS.planner}, replan every {FLAGS.replan_every} steps, plans of "
        f"{FLAGS.min_categories}-{FLAGS.max_categories} categories")
  if FLAGS.planner != "heuristic":
    print(f"prompt: {FLAGS.history_window} steps, shortlist "
          f"{FLAGS.shortlist_size or 'none'}, totals "
          f"{'shown' if FLAGS.show_totals else 'not shown'}")
  for rule in rules:
    overrides = {"exit_rule": rule.name, "exit_params": rule.params}
    for name in POLICIES:
      flat, planned, planner = flat_and_planned(name, overrides)
      change = relative_change(flat["mean"], planned["mean"])
      met = change >= -MAX_LOSS_PERCENT
      llm = (f", LLM plans {planner['llm_plan_share']:.1%}"
             if "llm_plan_share" in planner else "")
      print(f"{rule.label:22} {name:12} flat {metrics.format_mean_ci(flat, 2)}"
            f", planned {metrics.format_mean_ci(planned, 2)}, change "
            f"{change:+.1f}%; loss <= {MAX_LOSS_PERCENT:.0f}%: "
            f"{'met' if met else 'NOT met'}; LLM calls "
            f"{planner['llm_calls_per_1k_user_steps']:.1f} per 1,000 "
            f"user-steps{llm}")


if __name__ == "__main__":
  app.run(main)
