r"""Sanity table: scripted policies on a scenario under each exit rule.

Shows whether a scenario rewards what it should before any agent is trained:
random, myopic (filter bubble), diversifying and oracle policies, each on
fresh users, one session per user, for every exit rule.

  python -m lerl_recsim.agents.sanity --root_dir=runs/sanity

Writes `config.json`, `sanity.json` and `sanity.md` under --root_dir.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from absl import flags, logging

import lerl_recsim
from lerl_recsim.agents import binary  # first: a quiet start
from lerl_recsim import evaluation, metrics, results
from lerl_recsim.agents import sanity_policies

# (label, exit rule, exit parameters) for every published rule setting.
EXIT_RULE_SETTINGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("satisfaction", "satisfaction", {}),
    ("temper", "temper", {}),
    ("kuaisim", "kuaisim", {}),
    ("category_window (DORL)", "category_window", {"preset": "dorl"}),
    ("category_window (EasyRL4Rec)", "category_window", {"preset": "easyrl4rec"}),
    ("budget", "budget", {}),
)

FLAGS = flags.FLAGS
flags.DEFINE_string("root_dir", None, "Where to write the table.", required=True)
flags.DEFINE_string("scenario", "interest_evolution", "Scenario name.")
flags.DEFINE_integer("num_sessions", 512, "Sessions per policy and rule.")
flags.DEFINE_integer("seed", 0, "Seed of scenario and policies.")


def run_sanity_table(root_dir: str, scenario: str = "interest_evolution",
                     num_sessions: int = 512, seed: int = 0,
                     policies: Sequence[str] = tuple(sanity_policies.SANITY_POLICIES),
                     **overrides: Any) -> dict[str, Any]:
  """Evaluates each scripted policy under each exit rule setting.

  Args:
    root_dir: output directory (refused if it holds another configuration).
    scenario: registered scenario name.
    num_sessions: fresh users per (policy, rule); one session each.
    seed: seeds the scenario and the policies' tie-breaking.
    policies: names from `sanity_policies.SANITY_POLICIES`.
    **overrides: scenario overrides applied under every rule.

  Returns:
    {rule label: {policy: metrics summary}} plus the configuration.
  """
  unknown = sorted(set(policies) - set(sanity_policies.SANITY_POLICIES))
  if unknown:
    raise ValueError(f"unknown sanity policies {unknown}; accepted: "
                     f"{sorted(sanity_policies.SANITY_POLICIES)}")
  table: dict[str, dict[str, Any]] = {}
  configs = {}
  for label, rule, params in EXIT_RULE_SETTINGS:
    env = lerl_recsim.make_env(scenario, num_users=num_sessions, seed=seed,
                               exit_rule=rule, exit_params=params, **overrides)
    configs[label] = dict(env.config)
    table[label] = {}
    for name in policies:
      start = time.perf_counter()
      policy = sanity_policies.SANITY_POLICIES[name](env, seed=seed)
      table[label][name] = metrics.summarise(
          evaluation.evaluate_sessions(env, policy))
      logging.info("%s / %s: %.1fs", label, name, time.perf_counter() - start)
  config = {"scenario": scenario, "num_sessions": num_sessions, "seed": seed,
            "policies": list(policies), "overrides": overrides,
            "lerl_recsim_version": lerl_recsim.__version__,
            "resolved": configs}
  root = results.claim_directory(root_dir, config)
  results.write_json_atomic(root / "sanity.json", table)
  markdown = format_table(table)
  (root / "sanity.md").write_text(markdown)
  return {"table": table, "markdown": markdown, "config": config}


def format_table(table: dict[str, dict[str, Any]]) -> str:
  """Markdown: cumulative reward, length and per-step reward, mean ± CI95."""
  lines = ["| exit rule | policy | cumulative reward | interaction length | "
           "per-step reward | categories | sessions |",
           "|---|---|---|---|---|---|---|"]
  for label, by_policy in table.items():
    for name, summary in by_policy.items():
      cell = lambda key, digits=2: metrics.format_mean_ci(summary[key], digits)
      lines.append(
          f"| {label} | {name} | {cell('cumulative_reward')} | "
          f"{cell('interaction_length', 1)} | {cell('step_reward', 3)} | "
          f"{cell('category_coverage', 1)} | {summary['num_sessions']} |")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> None:
  del argv
  outcome = run_sanity_table(FLAGS.root_dir, FLAGS.scenario,
                             FLAGS.num_sessions, FLAGS.seed)
  print(outcome["markdown"])


if __name__ == "__main__":
  binary.run(main, __name__)
