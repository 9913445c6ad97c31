"""Training one agent: dispatch to its family's train_eval.

Kept apart from the `lerl-train` binary so that other programs (the main
job, comparisons, tests) can train without defining its absl flags. Each
family's hyper-parameters are its `train_eval`'s keyword defaults, changed
through gin (`agents/gin_config.py`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from lerl_recsim.agents import bandit, dqn, ppo, run_config, scripted

FAMILIES: Mapping[str, Callable[..., dict[str, Any]]] = {
    "dqn": dqn.train_eval, "ppo": ppo.train_eval,
    "bandit": bandit.train_eval, "scripted": scripted.train_eval,
}


def train_eval(run: run_config.RunConfig, root_dir: str) -> dict[str, Any]:
  """Trains and evaluates `run.agent` with its family's hyper-parameters
  as gin binds them."""
  return FAMILIES[run.spec.family](run, root_dir)
