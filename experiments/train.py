"""Training one agent: its family's learner in the run loop.

Kept apart from the `lerl-train` binary so that other programs (the main
job, comparisons, tests) can train without defining its absl flags. Each
learning family's hyper-parameters are its `Hyperparameters` defaults,
changed through gin (`experiments/gin_config.py`); scripted agents are
only evaluated.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lerl_recsim.agents import scripted
from lerl_recsim.agents.registry import LEARNING_FAMILIES
from lerl_recsim.experiments import run_config, runner


def hyperparameters(family: str) -> Any:
  """The family's hyper-parameters as gin binds them now."""
  return LEARNING_FAMILIES[family].Hyperparameters()


def train_eval(run: run_config.RunConfig, root_dir: str) -> dict[str, Any]:
  """Trains and evaluates `run.agent` with its family's hyper-parameters
  as gin binds them (scripted agents: evaluates them)."""
  family = run.spec.family
  if family == "scripted":
    return runner.train_and_evaluate(
        run, root_dir, make_learner=None,
        hyperparameters=scripted.hyperparameters(run.agent),
        scripted_policy=scripted.make_policy(run.agent, run.seed))
  chosen = hyperparameters(family)
  module = LEARNING_FAMILIES[family]
  return runner.train_and_evaluate(
      run, root_dir, lambda env: module.build_learner(env, chosen),
      dataclasses.asdict(chosen))
