"""Evaluations during a run: every policy on the same fresh users, with
TensorBoard scalars and one line of the run's evaluation history each time."""

from __future__ import annotations

import json
from typing import Any, Mapping

import tensorflow as tf
from absl import logging
from tf_agents.environments import py_environment
from tf_agents.policies import py_policy

from lerl_recsim import evaluation, metrics
from lerl_recsim.experiments.checkpoints import RunDirectory
from lerl_recsim.experiments.planner_counts import (PLANNED_ENVIRONMENTS,
                                                    counts_delta,
                                                    planner_counts)
from lerl_recsim.planner import Planner

EVAL_SEED_OFFSET = 1_000_003  # evaluation users never equal training users
# The key of the greedy (or scripted) policy's evaluation, whose results are
# the summary's top level; extra policies' go under their own keys.
MAIN = "greedy"


def evaluate_policy(eval_env: py_environment.PyEnvironment,
                    policy: py_policy.PyPolicy,
                    train_env: Any = None) -> dict[str, Any]:
  """One session per fresh evaluation user: `{mean, ci95}` per metric,
  `num_sessions`, `exposure_curve` and the evaluation's `planner` counts.

  Requests training left queued in the background are dropped first, so
  that they do not hold up evaluation's own (plans are asked again when
  training meets them again; lessons are lost, and counted in training's
  `reflections_dropped`). An LLM planner's waiting is bounded per
  evaluation (`Planner.evaluation_wait_s`). The planner counts returned are
  this evaluation's alone. Evaluation's own background requests end with
  it (its worker stops after the batch in flight), so that they neither
  compete with training for the model nor outlive the evaluation
  uncounted.
  """
  if isinstance(train_env, PLANNED_ENVIRONMENTS):
    train_env.planner.close()
  llm = getattr(eval_env, "planner", None)
  if isinstance(llm, Planner):
    llm.start_wait_budget()
  before = planner_counts(eval_env)
  exposure = evaluation.ExposureCurve()
  try:
    values = evaluation.evaluate_sessions(eval_env, policy, exposure)
  finally:
    if isinstance(llm, Planner):
      llm.close()
  summary: dict[str, Any] = metrics.summarise(values)
  summary["exposure_curve"] = exposure.to_dict()
  summary["planner"] = counts_delta(planner_counts(eval_env), before)
  return summary


def run_evaluation(train_env: Any, eval_env: py_environment.PyEnvironment,
                   policies: Mapping[str, py_policy.PyPolicy],
                   eval_writer: tf.summary.SummaryWriter,
                   step: int, directory: RunDirectory,
                   user_steps: int | None = None
                   ) -> dict[str, dict[str, Any]]:
  """Evaluates each policy on the same fresh users; returns their
  `evaluate_policy` summaries by key.

  Records TensorBoard scalars (an extra policy's under "KEY/"), one history
  line (`MAIN`'s results at its top level, an extra's under its key; no
  exposure curves).
  """
  results = {key: evaluate_policy(eval_env, policy, train_env)
             for key, policy in policies.items()}
  history: dict[str, Any] = {"iteration": step}
  if user_steps is not None:
    history["user_steps"] = user_steps
  for key, summary in results.items():
    main = key == MAIN
    with eval_writer.as_default(step=step):
      for name in metrics.EPISODE_METRICS:
        tf.summary.scalar(name if main else f"{key}/{name}",
                          summary[name]["mean"])
    logging.info("%sevaluation at iteration %d: cumulative reward %.2f ± "
                 "%.2f, interaction length %.1f ± %.1f over %d sessions",
                 "" if main else f"{key} ", step,
                 summary["cumulative_reward"]["mean"],
                 summary["cumulative_reward"]["ci95"],
                 summary["interaction_length"]["mean"],
                 summary["interaction_length"]["ci95"],
                 summary["num_sessions"])
    recorded = {name: value for name, value in summary.items()
                if name != "exposure_curve"}
    if main:
      history.update(recorded)
    else:
      history[key] = recorded
  directory.eval.mkdir(parents=True, exist_ok=True)
  with directory.eval_history.open("a") as stream:
    stream.write(json.dumps(history) + "\n")
  return results
