"""The main job's library: LERL against the flat DQN, each trained until
its learning curve levels off, and their table (the binary is
`quickstart`)."""

from __future__ import annotations

import pathlib
from typing import Any, Mapping

from absl import logging

from lerl_recsim import learning_curves, metrics
from lerl_recsim.experiments import run_config, train

AGENTS = ("lerl", "dqn")
# Evaluations every 1,000 iterations, so that the plateau rule (two windows
# of 3 evaluations) can first stop a run at 6,000; at most the DQN family's
# convergence budget.
EVAL_INTERVAL = 1000
MAX_ITERATIONS = run_config.CONVERGENCE_BUDGETS["dqn"]
COLUMNS = (("cumulative_reward", "cumulative reward", 2),
           ("interaction_length", "interaction length", 1),
           ("step_reward", "per-step reward", 3),
           ("category_coverage", "categories", 1),
           ("repetition_rate", "repetition", 2),
           ("majority_category_share", "majority share", 2))


def compare_lerl_and_dqn(root_dir: str, planner: str = run_config.DEFAULT_PLANNER,
                         num_iterations: int = MAX_ITERATIONS,
                         num_users: int = run_config.RunConfig.num_users,
                         num_eval_sessions: int = (
                             run_config.RunConfig.num_eval_sessions),
                         seed: int = run_config.RunConfig.seed
                         ) -> dict[str, Any]:
  """Trains and evaluates both agents; returns their summaries and table.

  Args:
    root_dir: parent of the two run directories.
    planner: backend of LERL's planner.
    num_iterations: the most training iterations of each agent; each
      stops at the first evaluation (every EVAL_INTERVAL iterations) at
      which its learning curve has levelled off.
    num_users: simultaneous training users.
    num_eval_sessions: fresh users in the final evaluation.
    seed: seed of both runs (same evaluation users for both).
  """
  root = pathlib.Path(root_dir)
  summaries = {}
  for agent in AGENTS:
    run = run_config.RunConfig(
        agent=agent, planner=planner, num_users=num_users,
        num_iterations=num_iterations, num_eval_sessions=num_eval_sessions,
        eval_interval=min(EVAL_INTERVAL, num_iterations),
        checkpoint_interval=min(EVAL_INTERVAL, num_iterations),
        log_interval=min(EVAL_INTERVAL, num_iterations),
        stop_when_levelled=True,
        seed=seed, planner_cache=str(root / "planner_cache.sqlite"))
    logging.info("training %s until its learning curve levels off (at most "
                 "%d iterations)", agent, num_iterations)
    summaries[agent] = train.train_eval(run, str(root / agent))
  table = format_table(summaries) + "\n" + format_curves(summaries)
  (root / "table.md").write_text(table)
  return {"summaries": summaries, "table": table}


def format_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
  """Markdown, one row per agent: mean ± CI95 over evaluation sessions."""
  header = ["agent", *(label for _, label, _ in COLUMNS),
            "LLM calls / 1k user-steps", "plans by the LLM (training)",
            "wall time (s)"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for agent, summary in summaries.items():
    cells = [agent]
    for key, _, digits in COLUMNS:
      cells.append(metrics.format_mean_ci(summary[key], digits))
    planner = summary["planner"]["train"]
    cells.append(f"{1000 * planner['llm_calls'] / planner['user_steps']:.1f}"
                 if planner.get("user_steps") else "—")
    cells.append(f"{planner['llm_plans'] / planner['planned_users']:.0%}"
                 if planner.get("planned_users") else "—")
    cells.append(f"{summary['wall_time_s']:.0f}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def format_curves(summaries: Mapping[str, Mapping[str, Any]]) -> str:
  """Each agent's learning curve in one line, and the plateau rule."""
  lines = ["Learning curves (cumulative reward of the greedy policy):"]
  lines += [learning_curves.format_curve(agent, summary["learning_curve"])
            for agent, summary in summaries.items()]
  lines.append(f"Levelled off: {learning_curves.PlateauRule().describe()}.")
  return "\n".join(lines) + "\n"
