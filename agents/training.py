"""Training one agent: dispatch to its family's train_eval.

Kept apart from the `lerl-train` binary so that other programs (the main
job, comparisons, tests) can train without defining its absl flags.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from lerl_recsim.agents import bandit, dqn, ppo, run_config, scripted

FAMILIES: Mapping[str, Callable[..., dict[str, Any]]] = {
    "dqn": dqn.train_eval, "ppo": ppo.train_eval,
    "bandit": bandit.train_eval, "scripted": scripted.train_eval,
}


def train_eval(run: run_config.RunConfig, root_dir: str,
               hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Trains and evaluates `run.agent`; hparams override the family's
  keyword defaults and are checked against them."""
  function = FAMILIES[run.spec.family]
  accepted = [name for name, parameter in
              inspect.signature(function).parameters.items()
              if parameter.kind is inspect.Parameter.KEYWORD_ONLY]
  unknown = sorted(set(hparams or {}) - set(accepted))
  if unknown:
    raise ValueError(
        f"unknown hyper-parameter(s) {unknown} for agent {run.agent!r} "
        f"(family {run.spec.family}); accepted: {accepted}")
  return function(run, root_dir, **dict(hparams or {}))
