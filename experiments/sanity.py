"""The sanity table's library: scripted policies on a scenario under every
published exit rule setting (the binary: `lerl_recsim.binaries.sanity`)."""

from __future__ import annotations

import time
from typing import Any, Sequence

from absl import logging

import lerl_recsim
from lerl_recsim import evaluation, metrics, results
from lerl_recsim.agents import scripted_policies

# (label, exit rule, exit parameters) for every published rule setting.
EXIT_RULE_SETTINGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("satisfaction", "satisfaction", {}),
    ("temper", "temper", {}),
    ("kuaisim", "kuaisim", {}),
    ("category_window (DORL)", "category_window", {"preset": "dorl"}),
    ("category_window (EasyRL4Rec)", "category_window", {"preset": "easyrl4rec"}),
    ("budget", "budget", {}),
)


def run_sanity_table(root_dir: str, scenario: str = "interest_evolution",
                     num_sessions: int = 512, seed: int = 0,
                     policies: Sequence[str] = tuple(scripted_policies.SCRIPTED_POLICIES),
                     **overrides: Any) -> dict[str, Any]:
  """Evaluates each scripted policy under each exit rule setting.

  Args:
    root_dir: output directory (refused if it holds another configuration).
    scenario: registered scenario name.
    num_sessions: fresh users per (policy, rule); one session each.
    seed: seeds the scenario and the policies' tie-breaking.
    policies: names from `scripted_policies.SCRIPTED_POLICIES`.
    **overrides: scenario overrides applied under every rule.

  Returns:
    {rule label: {policy: metrics summary}} plus the configuration.
  """
  unknown = sorted(set(policies) - set(scripted_policies.SCRIPTED_POLICIES))
  if unknown:
    raise ValueError(f"unknown sanity policies {unknown}; accepted: "
                     f"{sorted(scripted_policies.SCRIPTED_POLICIES)}")
  table: dict[str, dict[str, Any]] = {}
  configs = {}
  for label, rule, params in EXIT_RULE_SETTINGS:
    env = lerl_recsim.make_env(scenario, num_users=num_sessions, seed=seed,
                               exit_rule=rule, exit_params=params, **overrides)
    configs[label] = dict(env.config)
    table[label] = {}
    for name in policies:
      start = time.perf_counter()
      policy = scripted_policies.SCRIPTED_POLICIES[name](env, seed=seed)
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
