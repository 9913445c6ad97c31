"""Masked top-k slates from per-item Q-values, for slate sizes k > 1.

TF-Agents' DQN picks one action. For a slate, `TopKQPolicy` recommends the
k allowed items with the highest Q-values (excluded items get -inf, so they
never enter a slate), and exploration replaces a user's slate by k random
allowed items. Approximation: the DQN is trained as if the slate's top item
were the action — the step's reward (the engagement of whichever slate item
the user chose) is credited to that item — so Q ranks items by the value of
leading a slate, not by a full slate value (as SlateQ would).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf
from tf_agents.networks import network
from tf_agents.policies import tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step
from tf_agents.typing import types

from lerl_recsim.agents import networks


def item_spec(slate_spec: types.BoundedTensorSpec) -> types.BoundedTensorSpec:
  """The one-item action spec matching a slate spec."""
  return tensor_spec.BoundedTensorSpec(
      (), slate_spec.dtype, slate_spec.minimum, slate_spec.maximum, name="item")


class TopKQPolicy(tf_policy.TFPolicy):
  """Top-k allowed items under a Q-network; epsilon-random slates.

  Args:
    time_step_spec: the environment's (mask in the observation).
    action_spec: the slate spec, shape (k,).
    q_network: maps the split observation to Q-values of every item.
    splitter: the observation_and_action_constraint_splitter.
    epsilon: probability that a user's slate is random allowed items.
  """

  def __init__(self, time_step_spec: types.TimeStep,
               action_spec: types.BoundedTensorSpec, q_network: network.Network,
               splitter: Callable, epsilon: float = 0.0):
    super().__init__(time_step_spec, action_spec,
                     observation_and_action_constraint_splitter=splitter)
    self._q_network = q_network
    self._epsilon = epsilon
    self._slate_size = int(action_spec.shape[0])

  def _variables(self):
    return self._q_network.variables

  def _distribution(self, time_step, policy_state):
    raise NotImplementedError("TopKQPolicy samples slates; it has no distribution")

  def _action(self, time_step, policy_state, seed=None):
    observation, mask = self.observation_and_action_constraint_splitter(
        time_step.observation)
    q_values, _ = self._q_network(observation, step_type=time_step.step_type)
    scores = networks.mask_scores(q_values, mask)
    if self._epsilon > 0:
      batch = tf.shape(q_values)[0]
      noise = tf.random.uniform(tf.shape(q_values), seed=seed)
      random_scores = tf.where(tf.cast(mask, tf.bool), noise, -1.0)
      explore = tf.random.uniform([batch, 1]) < self._epsilon
      scores = tf.where(explore, random_scores, scores)
    slate = tf.math.top_k(scores, k=self._slate_size).indices
    return policy_step.PolicyStep(
        tf.cast(slate, self.action_spec.dtype), policy_state, ())


def leading_item(action: tf.Tensor) -> tf.Tensor:
  """What the replay buffer records of a slate: its top item."""
  return action[:, 0]
