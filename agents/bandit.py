"""The `myopic` baseline: a neural epsilon-greedy one-step reward model.

It learns the immediate engagement of each item in each situation and
serves the best allowed item: the click-optimising policy whose filter
bubble LERL is meant to escape.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import gin
import tensorflow as tf
from tf_agents.bandits.agents import neural_epsilon_greedy_agent
from tf_agents.environments import py_environment
from tf_agents.specs import tensor_spec

from lerl_recsim import environment as environment_lib
from lerl_recsim.agents import learners, networks, slate_policy
from lerl_recsim.agents.draws import Draws


def integer_mask_splitter(observation: dict) -> tuple[dict, tf.Tensor]:
  """The environment's splitter with the mask as int32: TF-Agents' bandit
  policies take `reduce_max` of the mask, which bool tensors do not allow."""
  network_observation, mask = environment_lib.splitter(observation)
  return network_observation, tf.cast(mask, tf.int32)


# gin: `bandit.train_eval.<hyper-parameter> = value` (see configs/).
@gin.configurable("train_eval", module="bandit")
@dataclasses.dataclass(frozen=True)
class Hyperparameters(learners.ReplaySettings):
  """The one-step reward model's hyper-parameters (`myopic`): these
  defaults and `ReplaySettings`' unless gin binds them (its batches are
  counted before dropping the LAST->FIRST transitions, whose action was
  ignored).

  Attributes:
    fc_layer_params: hidden layers of the reward network.
    learning_rate: Adam step size.
    epsilon: exploration rate while collecting.
  """

  fc_layer_params: Sequence[int] = (256, 128)
  learning_rate: float = 1e-3
  epsilon: float = 0.1


def make_agent(env: py_environment.PyEnvironment,
               hyperparameters: Hyperparameters
               ) -> neural_epsilon_greedy_agent.NeuralEpsilonGreedyAgent:
  h = hyperparameters
  inputs = networks.agent_inputs(env, "myopic")
  reward_net = networks.item_q_network(
      inputs.time_step_spec.observation, inputs.action_spec,
      inputs.item_categories, inputs.encoder, h.fc_layer_params)
  return learners.initialized_agent(
      neural_epsilon_greedy_agent.NeuralEpsilonGreedyAgent,
      inputs.time_step_spec, inputs.action_spec, reward_network=reward_net,
      learning_rate=h.learning_rate,
      epsilon=h.epsilon,
      observation_and_action_constraint_splitter=integer_mask_splitter)


def build_learner(env: py_environment.PyEnvironment,
                  hyperparameters: Hyperparameters
                  ) -> learners.OffPolicyLearner:
  """The agent and its replay learner on single steps, collecting with
  masked epsilon-greedy items whose draws a checkpoint holds."""
  h = hyperparameters
  agent = make_agent(env, h)
  draws = Draws()
  collect_policy = slate_policy.TopKQPolicy(
      tensor_spec.from_spec(env.time_step_spec()),
      tensor_spec.from_spec(env.action_spec()), agent._reward_network,
      integer_mask_splitter, h.epsilon, draws,
      info_spec=agent.collect_policy.info_spec)
  return learners.OffPolicyLearner(
      agent, env, replay=h, sequence_length=1, draws=draws,
      collect_policy=collect_policy, prepare=learners.drop_boundaries,
      greedy_policy=agent.policy.wrapped_policy)
