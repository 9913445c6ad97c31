r"""Training budgets judged as the reference comparison judges them.

Reads development runs (`lerl-train` directories, evaluated often) and, for
each candidate budget B, takes the evaluations a comparison run of budget B
makes (every B / CURVE_POINTS iterations), averages them over the seeds of
each (agent, exit rule) and applies the plateau rule with the across-seed
95% intervals, as `lerl-compare` does for its seed-mean curves. Prints, per
(agent, rule, budget): the seed-mean curve, the rule's rise and margin, and
whether it holds. The chosen budgets and the commands of the runs:
docs/results/development.md.

  python bench/budget_choice.py --runs_dir=runs/budgets \
      --budgets=dqn:20000:30000:40000,ppo:2000:4000
"""

from __future__ import annotations

import collections
import json
import pathlib
from typing import Sequence

from absl import app, flags

import lerl_recsim  # noqa: F401  (Keras 2 for TF-Agents, first)
from lerl_recsim import learning_curves, metrics
from lerl_recsim.experiments import run_config

FLAGS = flags.FLAGS
flags.DEFINE_string("runs_dir", "runs/budgets", "Folder holding run "
                    "directories at any depth (each with config.json and "
                    "eval/history.jsonl).")
flags.DEFINE_list("budgets", ["dqn:20000:30000:40000", "ppo:2000:4000"],
                  "Candidate budgets per agent family, FAMILY:B1:B2:...")


def rule_label(run: dict) -> str:
  overrides = run.get("scenario_overrides") or {}
  preset = (overrides.get("exit_params") or {}).get("preset")
  name = overrides.get("exit_rule", "default")
  return name if preset is None else f"{name}:{preset}"


def parse_budgets(entries: Sequence[str]) -> dict[str, list[int]]:
  budgets = {}
  for entry in entries:
    family, *values = entry.split(":")
    if family not in run_config.CONVERGENCE_BUDGETS or not values:
      raise ValueError(f"--budgets: {entry!r} is not FAMILY:B1:B2 with a "
                       f"family of {sorted(run_config.CONVERGENCE_BUDGETS)}")
    budgets[family] = [int(v) for v in values]
  return budgets


def main(argv: Sequence[str]) -> None:
  del argv
  budgets = parse_budgets(FLAGS.budgets)
  curves: dict[tuple[str, str, str], dict[int, dict[int, float]]] = (
      collections.defaultdict(dict))
  for config_path in sorted(pathlib.Path(FLAGS.runs_dir).rglob("config.json")):
    run = json.loads(config_path.read_text())["run"]
    spec = run_config.AGENTS[run["agent"]]
    method = run["agent"] if spec.planner is None else \
        f"{run['agent']}+{run['planner']}"
    history = learning_curves.read_history(config_path.parent)
    curves[(spec.family, method, rule_label(run))][run["seed"]] = {
        int(h["iteration"]): float(h[learning_curves.METRIC]["mean"])
        for h in history}
  rule = learning_curves.PlateauRule()
  print(f"plateau rule: {rule.describe()} (across-seed 95% intervals)")
  for (family, method, label), seeded in sorted(curves.items()):
    for budget in budgets.get(family, []):
      step = budget // run_config.CURVE_POINTS
      points = [step * (i + 1) for i in range(run_config.CURVE_POINTS)]
      seeds = sorted(s for s, c in seeded.items() if all(p in c for p in points))
      if len(seeds) < 2:
        print(f"{method} {label} {budget:,}: {len(seeds)} seed(s) reach it")
        continue
      summary = [metrics.mean_and_ci95([seeded[s][p] for s in seeds])
                 for p in points]
      means = [m["mean"] for m in summary]
      ci95s = [m["ci95"] for m in summary]
      gain, margin = rule.gain_and_margin(means, ci95s, len(means))
      verdict = "holds" if rule.levelled(means, ci95s) else "fails"
      print(f"{method} {label} budget {budget:,} (seeds "
            f"{','.join(map(str, seeds))}): {verdict}, rise {gain:+.3f} "
            f"against ±{margin:.3f}; seed-mean curve "
            + ", ".join(f"{m:.2f}" for m in means))


if __name__ == "__main__":
  app.run(main)
