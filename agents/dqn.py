"""Masked double DQN: the low level of `lerl` and the flat `dqn` baseline.

The mask reaches the agent through `observation_and_action_constraint_splitter`,
so both the greedy/epsilon-greedy action and the TD target's max over the
next state only consider allowed items.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import gin
import tensorflow as tf
from tf_agents.agents.dqn import dqn_agent
from tf_agents.environments import py_environment
from tf_agents.specs import tensor_spec
from tf_agents.utils import common

from lerl_recsim import environment as environment_lib
from lerl_recsim.agents import learners, networks, slate_policy
from lerl_recsim.agents.draws import Draws


# gin: `dqn.train_eval.<hyper-parameter> = value` (see configs/dqn.gin).
@gin.configurable("train_eval", module="dqn")
@dataclasses.dataclass(frozen=True)
class Hyperparameters(learners.ReplaySettings):
  """The masked double DQN's hyper-parameters (`lerl`, `dqn`,
  `heuristic_dqn`): these defaults and `ReplaySettings`' unless gin binds
  them.

  Attributes:
    fc_layer_params: hidden layers of the Q-network after the encoder.
    learning_rate: Adam step size.
    gamma: discount of future engagement (LERL's authors used 0.9).
    epsilon_greedy: exploration rate of the collect policy.
    target_update_period: gradient steps between target-network copies.
    n_step: steps of observed reward in each TD target before bootstrapping.
  """

  fc_layer_params: Sequence[int] = (256, 128)
  learning_rate: float = 3e-4
  gamma: float = 0.9
  epsilon_greedy: float = 0.1
  target_update_period: int = 100
  n_step: int = 1


class ItemDdqnAgent(dqn_agent.DdqnAgent):
  """TF-Agents' double DQN, computing the same TD loss with less work: the
  online Q of the taken action and the target Q of the greedy next action
  are scored for those items only (`ItemScoringNetwork.item_scores`), not
  for all items and then indexed. Only the greedy choice of the next action
  scores every item (and applies the mask)."""

  def _compute_q_values(self, time_steps, actions, training=False):
    observation, _ = self._observation_and_action_constraint_splitter(
        time_steps.observation)
    return self._q_network.item_scores(observation, actions, training=training)

  def _compute_next_q_values(self, next_time_steps, info):
    del info
    observation, mask = self._observation_and_action_constraint_splitter(
        next_time_steps.observation)
    q_values, _ = self._q_network(observation,
                                  step_type=next_time_steps.step_type)
    best_next_actions = tf.argmax(networks.mask_scores(q_values, mask), -1,
                                  output_type=tf.int32)
    return self._target_q_network.item_scores(observation, best_next_actions)


def make_agent(env: py_environment.PyEnvironment,
               hyperparameters: Hyperparameters) -> ItemDdqnAgent:
  """A double DQN over item Q-values for a planned or flat environment.

  With slates (k > 1) the agent itself acts on single items; `build_learner`
  wraps it in top-k slate policies (see `slate_policy`).
  """
  h = hyperparameters
  inputs = networks.agent_inputs(env, "DQN", slates_supported=True)
  action_spec = inputs.action_spec
  if action_spec.shape.rank:
    action_spec = slate_policy.item_spec(action_spec)
  q_net = networks.item_q_network(inputs.time_step_spec.observation,
                                  action_spec, inputs.item_categories,
                                  inputs.encoder, h.fc_layer_params)
  return learners.initialized_agent(
      ItemDdqnAgent,
      inputs.time_step_spec, action_spec, q_network=q_net,
      learning_rate=h.learning_rate,
      observation_and_action_constraint_splitter=environment_lib.splitter,
      epsilon_greedy=h.epsilon_greedy, gamma=h.gamma,
      target_update_period=h.target_update_period, n_step_update=h.n_step,
      td_errors_loss_fn=common.element_wise_huber_loss)


def build_learner(env: py_environment.PyEnvironment,
                  hyperparameters: Hyperparameters
                  ) -> learners.OffPolicyLearner:
  """The agent and its replay learner (sequences of n_step + 1 steps),
  collecting with masked epsilon-greedy items, or top-k slates
  (`slate_policy`), whose draws a checkpoint holds."""
  h = hyperparameters
  agent = make_agent(env, h)
  draws = Draws()
  action_spec = tensor_spec.from_spec(env.action_spec())
  time_step_spec = tensor_spec.from_spec(env.time_step_spec())

  def top_k(epsilon: float) -> slate_policy.TopKQPolicy:
    return slate_policy.TopKQPolicy(time_step_spec, action_spec,
                                    agent._q_network, environment_lib.splitter,
                                    epsilon, draws)

  # One item: the agent's own greedy policy is evaluated and exported.
  slates = ({} if action_spec.shape.rank == 0 else
            {"greedy_policy": top_k(0.0),
             "recorded_action": slate_policy.leading_item})
  return learners.OffPolicyLearner(
      agent, env, replay=h, sequence_length=h.n_step + 1, draws=draws,
      collect_policy=top_k(h.epsilon_greedy), **slates)
