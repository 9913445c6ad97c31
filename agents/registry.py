"""The learning families by name: each module has `Hyperparameters`
(gin-configurable as `<family>.train_eval`) and
`build_learner(env, hyperparameters)`."""

from __future__ import annotations

from types import ModuleType
from typing import Mapping

from lerl_recsim.agents import bandit, dqn, ppo

LEARNING_FAMILIES: Mapping[str, ModuleType] = {
    "dqn": dqn, "ppo": ppo, "bandit": bandit}
