"""A training run's progress: a line every `log_interval` iterations, and
the training scalars TensorBoard shows beside them."""

from __future__ import annotations

import datetime
import time
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from lerl_recsim.agents import networks
from lerl_recsim.experiments import run_config as run_config_lib
from lerl_recsim.experiments.planner_counts import (counts_delta,
                                                    planner_counts, uses_llm)


class ProgressLog:
  """Per window of `log_interval` iterations: user-steps per second of
  training (evaluations left out), the time left, the recent sessions'
  reward and length, the mean loss and the LLM's share of the window's plans.

  Scalars go to the default TensorBoard writer, at its step.
  """

  def __init__(self, run: run_config_lib.RunConfig, learner: Any,
               train_env: Any, first_iteration: int) -> None:
    self._run = run
    self._learner = learner
    self._train_env = train_env
    self._recorder = networks.base_environment(train_env).episode_metrics
    self._losses: list[float] = []
    self._window_counts = planner_counts(train_env)
    self._window_start = time.perf_counter()
    self._window_first_step = learner.user_steps
    self._started = time.perf_counter()
    self._first_iteration = first_iteration

  def exclude(self, seconds: float) -> None:
    """Leaves `seconds` (an evaluation) out of the window's rate."""
    self._window_start += seconds

  def iteration_done(self, step: int, loss: float) -> None:
    """Counts iteration `step`'s loss; logs when a window ends."""
    self._losses.append(loss)
    run = self._run
    if step % run.log_interval and step != run.num_iterations:
      return
    elapsed = time.perf_counter() - self._window_start
    recent = self._recorder.summary()
    rate = ((self._learner.user_steps - self._window_first_step)
            / max(elapsed, 1e-9))
    remaining = ((run.num_iterations - step)
                 * (time.perf_counter() - self._started)
                 / (step - self._first_iteration))
    counts = planner_counts(self._train_env)
    window = counts_delta(counts, self._window_counts)
    llm_share = ""
    if window.get("planned_users") and uses_llm(self._train_env):
      llm_share = (f" | LLM plans "
                   f"{window['llm_plans'] / window['planned_users']:.0%}")
    mean_loss = float(np.mean(self._losses))
    logging.info(
        "iteration %d/%d | %.0f user-steps/s | ETA %s | recent cumulative "
        "reward %.2f | interaction length %.1f | sessions %d | loss %.4f%s",
        step, run.num_iterations, rate,
        datetime.timedelta(seconds=round(remaining)),
        recent["cumulative_reward"]["mean"],
        recent["interaction_length"]["mean"], recent["num_sessions"],
        mean_loss, llm_share)
    tf.summary.scalar("user_steps_per_second", rate)
    tf.summary.scalar("loss", mean_loss)
    if recent["num_sessions"]:
      for name in ("cumulative_reward", "interaction_length", "step_reward"):
        tf.summary.scalar(f"train/{name}", recent[name]["mean"])
    for name, value in counts.items():
      tf.summary.scalar(f"planner/{name}", value)
    if window.get("planned_users"):
      # The LLM's share of the plans made since the last progress line.
      tf.summary.scalar("planner/llm_plan_share_recent",
                        window["llm_plans"] / window["planned_users"])
    self._window_counts = counts
    self._recorder.clear()
    self._losses.clear()
    self._window_start = time.perf_counter()
    self._window_first_step = self._learner.user_steps
