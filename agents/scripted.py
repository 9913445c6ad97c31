"""`random`, `diversifying`, `oracle` and `planning_oracle`: fixed policies,
evaluated without training.

`random` recommends uniformly among allowed items; `diversifying` prefers
categories the user engaged with and avoids recently shown categories and
groups (a scripted bar every learned agent should clear); `oracle` reads the
hidden user state (not deployable) and gives an upper reference for
immediate engagement; `planning_oracle` searches ahead in the true simulator
from the hidden state (`lerl_recsim.lookahead`), the reference for long-term
satisfaction. Their runs write the same summary as trained agents.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lerl_recsim import lookahead
from lerl_recsim.agents import networks, run_config, runner, sanity_policies

SCRIPTED = {name: sanity_policies.SANITY_POLICIES[name]
            for name in ("random", "diversifying", "oracle", "planning_oracle")}


def train_eval(run: run_config.RunConfig, root_dir: str) -> dict[str, Any]:
  """Evaluates the scripted policy named by `run.agent` on fresh users."""
  policy_class = SCRIPTED[run.agent]
  # The planning oracle's search settings go into config.json with its
  # results: they decide its numbers as a learner's hyper-parameters do.
  settings = ({"settings": lookahead.SearchSettings()}
              if run.agent == "planning_oracle" else {})
  return runner.train_and_evaluate(
      run, root_dir, make_learner=None,
      hyperparameters={name: dataclasses.asdict(value)
                       for name, value in settings.items()},
      scripted_policy=lambda env: policy_class(networks.base_environment(env),
                                               seed=run.seed, **settings))
