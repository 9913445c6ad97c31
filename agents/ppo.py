"""Masked PPO: the low level of `lerl_ppo` and the flat `ppo` baseline.

LERL's authors trained PPO. The actor scores items like the Q-network
(`networks.ItemCategoricalNetwork`) and reads the mask through TF-Agents'
`MaskSplitterNetwork`, so excluded items get zero probability; the value
network sees the observation without the mask. Runs are evaluated greedily
and by sampling the stochastic policy (`OnPolicyLearner`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import gin
from tf_agents.agents.ppo import ppo_clip_agent
from tf_agents.environments import py_environment

from lerl_recsim.agents import learners, networks


# gin: `ppo.train_eval.<hyper-parameter> = value` (see configs/ppo.gin).
@gin.configurable("train_eval", module="ppo")
@dataclasses.dataclass(frozen=True)
class Hyperparameters:
  """Masked PPO's hyper-parameters (`lerl_ppo`, `ppo`): these defaults
  unless gin binds them.

  Attributes:
    fc_layer_params: hidden layers of the actor and value networks.
    learning_rate: Adam step size.
    gamma: discount of future engagement (LERL's authors used 0.9).
    lambda_value: GAE lambda.
    num_epochs: passes over each collected batch.
    importance_ratio_clipping: PPO's clipping epsilon.
    entropy_regularization: entropy bonus weight.
    collect_steps_per_iteration: environment steps (of all users) per
      on-policy batch.
  """

  fc_layer_params: Sequence[int] = (256, 128)
  learning_rate: float = 3e-4
  gamma: float = 0.9
  lambda_value: float = 0.95
  num_epochs: int = 4
  importance_ratio_clipping: float = 0.2
  entropy_regularization: float = 0.01
  collect_steps_per_iteration: int = 16


def make_agent(env: py_environment.PyEnvironment,
               hyperparameters: Hyperparameters) -> ppo_clip_agent.PPOClipAgent:
  h = hyperparameters
  inputs = networks.agent_inputs(env, "PPO")
  actor, value = networks.masked_actor_and_value_networks(
      inputs.time_step_spec.observation, inputs.action_spec,
      inputs.item_categories, inputs.encoder, h.fc_layer_params)
  return learners.initialized_agent(
      ppo_clip_agent.PPOClipAgent,
      inputs.time_step_spec, inputs.action_spec,
      learning_rate=h.learning_rate,
      actor_net=actor, value_net=value, discount_factor=h.gamma,
      lambda_value=h.lambda_value, use_gae=True, num_epochs=h.num_epochs,
      importance_ratio_clipping=h.importance_ratio_clipping,
      entropy_regularization=h.entropy_regularization,
      normalize_observations=False, normalize_rewards=False,
      compute_value_and_advantage_in_train=True)


def build_learner(env: py_environment.PyEnvironment,
                  hyperparameters: Hyperparameters
                  ) -> learners.OnPolicyLearner:
  """The agent and its on-policy learner."""
  return learners.OnPolicyLearner(
      make_agent(env, hyperparameters), env,
      collect_steps=hyperparameters.collect_steps_per_iteration)
