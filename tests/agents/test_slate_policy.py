"""The masked top-k Q policy DQN collects and serves with: greedy picks by
hand, exploration that stays inside the mask at its stated rate, and draws
that repeat for a seed."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats
from tf_agents.networks import network
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from lerl_recsim import environment as environment_lib
from lerl_recsim.agents import slate_policy
from lerl_recsim.agents.draws import Draws

Q_VALUES = [[0.1, 0.9, 0.5, 0.7, 0.3, 0.8]]
NUM_ITEMS = len(Q_VALUES[0])
OBSERVATION_SPEC = {"observation": tf.TensorSpec([1], tf.float32),
                    "mask": tf.TensorSpec([NUM_ITEMS], tf.bool)}


class FixedQNetwork(network.Network):
  """The same Q-values for every user."""

  def __init__(self):
    super().__init__(OBSERVATION_SPEC["observation"], state_spec=(),
                     name="FixedQNetwork")
    self._q = tf.Variable(Q_VALUES, dtype=tf.float32)

  def call(self, observation, step_type=None, network_state=(),
           training=False):
    batch = tf.shape(observation)[0]
    return tf.tile(self._q, [batch, 1]), network_state


def policy(slate: int | None, epsilon: float = 0.0,
           draws: Draws | None = None) -> slate_policy.TopKQPolicy:
  shape = () if slate is None else (slate,)
  action_spec = tensor_spec.BoundedTensorSpec(shape, tf.int32, 0,
                                              NUM_ITEMS - 1)
  return slate_policy.TopKQPolicy(ts.time_step_spec(OBSERVATION_SPEC),
                                  action_spec, FixedQNetwork(),
                                  environment_lib.splitter, epsilon, draws)


def time_step(masks: list[list[bool]]) -> ts.TimeStep:
  batch = len(masks)
  return ts.restart({"observation": tf.zeros([batch, 1]),
                     "mask": tf.constant(masks)}, batch_size=batch)


ALL = [True] * NUM_ITEMS


def test_greedy_items_are_the_best_allowed():
  masks = [ALL, [True, False, True, True, True, True],
           [True, False, False, False, True, False]]
  actions = policy(None).action(time_step(masks)).action.numpy()
  assert actions.tolist() == [1, 5, 4]


def test_greedy_slates_are_the_top_allowed_in_order():
  masks = [ALL, [True, False, True, True, True, False]]
  slates = policy(3).action(time_step(masks)).action.numpy()
  assert slates.tolist() == [[1, 5, 3], [3, 2, 4]]


def test_exploring_needs_draws():
  with pytest.raises(ValueError, match=r"epsilon=0.2 explores, which needs "
                     r"draws"):
    policy(None, epsilon=0.2)


def test_random_choices_are_uniform_over_allowed_items():
  tf.random.set_seed(0)
  explorer = policy(None, epsilon=1.0, draws=Draws())
  mask = [True, True, False, True, False, True]
  actions = np.concatenate([
      explorer.action(time_step([mask] * 100)).action.numpy()
      for _ in range(20)])
  counts = np.bincount(actions, minlength=NUM_ITEMS)
  assert counts[[2, 4]].tolist() == [0, 0]
  # 2,000 draws over 4 items: a chi-square test of uniformity.
  assert stats.chisquare(counts[[0, 1, 3, 5]]).pvalue > 1e-3


def test_exploring_slates_are_distinct_allowed_items_and_others_greedy():
  tf.random.set_seed(2)
  mask = [True, False, True, True, False, True]
  explorer = policy(3, epsilon=0.5, draws=Draws())
  slates = np.concatenate([explorer.action(time_step([mask] * 100)).action
                           .numpy() for _ in range(4)])
  greedy = policy(3).action(time_step([mask])).action.numpy()[0].tolist()
  assert greedy == [5, 3, 2]
  for slate in slates.tolist():
    assert len(set(slate)) == 3 and set(slate) <= {0, 2, 3, 5}
  # Greedy slates, plus random ones that happen to equal them (1 in 24).
  share = np.mean([s == greedy for s in slates.tolist()])
  assert stats.binomtest(int(share * len(slates)), len(slates),
                         0.5 + 0.5 / 24).pvalue > 1e-3


def test_exploration_rate_is_epsilon():
  tf.random.set_seed(1)
  explorer = policy(None, epsilon=0.3, draws=Draws())
  actions = np.concatenate([explorer.action(time_step([ALL] * 200)).action
                            .numpy() for _ in range(10)])
  # A random choice misses the greedy item 1 with probability 5/6.
  misses = int((actions != 1).sum())
  expected = 0.3 * 5 / 6
  assert stats.binomtest(misses, actions.size, expected).pvalue > 1e-3


def test_equal_draws_explore_alike():
  def actions() -> list[int]:
    tf.random.set_seed(7)
    explorer = policy(None, epsilon=0.5, draws=Draws())
    return [explorer.action(time_step([ALL] * 50)).action.numpy().tolist()
            for _ in range(3)]

  first = actions()
  assert first == actions()
  assert first[0] != first[1]  # the draws move on between calls


def test_a_slate_is_recorded_by_its_top_item():
  slates = tf.constant([[4, 1, 2], [0, 5, 3]])
  assert slate_policy.leading_item(slates).numpy().tolist() == [4, 0]
  spec = tensor_spec.BoundedTensorSpec((3,), tf.int32, 0, 9)
  item = slate_policy.item_spec(spec)
  assert (item.shape, item.minimum, item.maximum) == ((), 0, 9)
