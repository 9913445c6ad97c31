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
from typing import Any, Callable

from tf_agents.environments import py_environment
from tf_agents.policies import py_policy

from lerl_recsim import lookahead
from lerl_recsim.agents import networks, scripted_policies

SCRIPTED = {name: scripted_policies.SCRIPTED_POLICIES[name]
            for name in ("random", "diversifying", "oracle", "planning_oracle")}


def settings(agent: str) -> dict[str, Any]:
  """What decides a scripted agent's numbers as hyper-parameters decide a
  learner's (recorded in its run's config.json): the planning oracle's
  search settings; nothing for the others."""
  return ({"settings": lookahead.SearchSettings()}
          if agent == "planning_oracle" else {})


def make_policy(agent: str, seed: int
                ) -> Callable[[py_environment.PyEnvironment], py_policy.PyPolicy]:
  """Builds the scripted policy named `agent` on an evaluation environment."""
  policy_class = SCRIPTED[agent]
  options = settings(agent)
  return lambda env: policy_class(networks.base_environment(env), seed=seed,
                                  **options)


def hyperparameters(agent: str) -> dict[str, Any]:
  """`settings(agent)` as the plain values a run's configuration records."""
  return {name: dataclasses.asdict(value)
          for name, value in settings(agent).items()}
