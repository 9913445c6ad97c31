"""The agents' networks on hand-made observations: the encoder's features,
item scores that share what is learned across an item's categories, and
masks that exclude items from argmaxes and from PPO's categorical."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.specs import tensor_spec

from lerl_recsim.agents import networks

# Four items over two categories: item 2 has both, items 0 and 3 only A.
CATEGORIES = np.array([[1, 0], [0, 1], [1, 1], [1, 0]], np.float32)
MAX_LENGTH = 10
HISTORY = 2


def observation_spec(slate: int = 1) -> dict:
  inner = {
      "item_history": tf.TensorSpec([HISTORY, slate], tf.int32),
      "click_history": tf.TensorSpec([HISTORY, slate], tf.float32),
      "response_history": tf.TensorSpec([HISTORY, slate], tf.float32),
      "category_counts": tf.TensorSpec([2], tf.float32),
      "category_engagement": tf.TensorSpec([2], tf.float32),
      "session_length": tf.TensorSpec([], tf.int32),
      "mean_engagement": tf.TensorSpec([], tf.float32),
  }
  return {"observation": inner, "mask": tf.TensorSpec([4], tf.bool)}


ACTION_SPEC = tensor_spec.BoundedTensorSpec((), tf.int32, 0, 3)


def one_user(mask=(True, True, True, True)) -> dict:
  """After one step: padding, then item 2 (both categories), clicked with
  engagement 0.5."""
  inner = {
      "item_history": tf.constant([[[-1], [2]]], tf.int32),
      "click_history": tf.constant([[[0.0], [1.0]]]),
      "response_history": tf.constant([[[0.0], [0.5]]]),
      "category_counts": tf.constant([[1.0, 1.0]]),
      "category_engagement": tf.constant([[0.5, 0.5]]),
      "session_length": tf.constant([1], tf.int32),
      "mean_engagement": tf.constant([0.5]),
  }
  return {"observation": inner, "mask": tf.constant([mask])}


def encoder() -> networks.ObservationEncoder:
  return networks.ObservationEncoder(CATEGORIES, MAX_LENGTH)


def test_encoder_features_by_hand():
  features = encoder()(one_user()["observation"]).numpy()
  np.testing.assert_allclose(features, [[
      0, 0, 1, 1,      # categories shown: padding, then item 2's two
      0, 1,            # clicks
      0, 0.5,          # engagement
      1, 1,            # share of items per category (1 item, both)
      0.25, 0.25,      # engagement per category: 0.5 / (1 + 1)
      0.1,             # session length / 10
      0.5]])           # mean engagement


def test_encoder_sums_a_slates_categories_per_step():
  observation = dict(one_user()["observation"])
  observation["item_history"] = tf.constant([[[0, 1], [2, -1]]], tf.int32)
  observation["click_history"] = tf.zeros([1, 2, 2])
  observation["response_history"] = tf.zeros([1, 2, 2])
  features = encoder()(observation).numpy()
  np.testing.assert_allclose(features[0, :4], [1, 1, 1, 1])
  assert features.shape == (1, 4 + 4 + 4 + 2 + 2 + 1 + 1)


def test_scoring_network_needs_a_row_of_categories_per_item():
  with pytest.raises(ValueError, match=r"item_categories has 3 rows for 4 "
                     r"actions"):
    networks.ItemScoringNetwork(observation_spec()["observation"],
                                ACTION_SPEC, CATEGORIES[:3], encoder(), (8,))


def score_changes(seed: int) -> np.ndarray:
  """Each item's score change after gradient steps raising item 0's."""
  tf.random.set_seed(seed)
  net = networks.ItemScoringNetwork(observation_spec()["observation"],
                                    ACTION_SPEC, CATEGORIES, encoder(), (16,))
  observation = one_user()["observation"]
  before = net(observation)[0].numpy()[0]
  optimizer = tf.keras.optimizers.SGD(0.01)
  for _ in range(5):
    with tf.GradientTape() as tape:
      loss = -net(observation)[0][0, 0]
    optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables),
                                  net.trainable_variables))
  return net(observation)[0].numpy()[0] - before


@pytest.mark.parametrize("seed", range(5))
def test_learning_about_an_item_moves_the_items_of_its_categories(seed):
  change = score_changes(seed)
  # Item 3 has item 0's categories, item 1 none of them.
  assert change[0] > 0
  assert change[3] > 0.5 * change[0]
  assert change[3] > change[1]


def test_item_scores_are_the_given_items_entries_of_all_scores():
  tf.random.set_seed(0)
  net = networks.ItemScoringNetwork(observation_spec()["observation"],
                                    ACTION_SPEC, CATEGORIES, encoder(), (16,))
  users = tf.nest.map_structure(lambda x: tf.concat([x, x, x], 0),
                                one_user()["observation"])
  users["session_length"] = tf.constant([1, 4, 9])  # three different users
  every = net(users)[0].numpy()
  items = tf.constant([2, 0, 3])
  np.testing.assert_allclose(net.item_scores(users, items).numpy(),
                             every[[0, 1, 2], [2, 0, 3]], rtol=1e-5,
                             atol=1e-6)
  assert len(set(np.round(every[:, 0], 6))) == 3


def test_masked_scores_never_win_and_get_zero_probability():
  scores = tf.constant([[1.0, 5.0, 3.0], [2.0, 1.0, 0.0]])
  mask = tf.constant([[True, False, True], [False, False, True]])
  masked = networks.mask_scores(scores, mask)
  assert tf.argmax(masked, axis=1).numpy().tolist() == [2, 2]
  distribution = tf.nn.softmax(masked).numpy()
  assert distribution[0, 1] == distribution[1, 0] == distribution[1, 1] == 0
  categorical = tfp.distributions.Categorical(logits=masked)
  assert np.isfinite(categorical.entropy().numpy()).all()
  assert np.isfinite(categorical.log_prob([0, 2]).numpy()).all()


def actor_and_value():
  tf.random.set_seed(0)
  return networks.masked_actor_and_value_networks(
      observation_spec(), ACTION_SPEC, CATEGORIES, encoder(), (16,))


def test_ppo_actor_gives_excluded_items_zero_probability():
  actor, value = actor_and_value()
  mask = (True, False, True, False)
  distribution, _ = actor(one_user(mask))
  probabilities = distribution.probs_parameter().numpy()[0]
  assert probabilities[[1, 3]].tolist() == [0.0, 0.0]
  assert probabilities.sum() == pytest.approx(1.0)
  draws = distribution.sample(2000, seed=1).numpy().ravel()
  assert set(draws) <= {0, 2}
  values, _ = value(one_user(mask))
  assert values.shape == (1,)


def test_a_copied_actor_has_weights_of_its_own():
  actor, _ = actor_and_value()
  observation = one_user()
  actor(observation)
  copy = actor.copy(name="copy")
  copy(observation)
  before = copy(observation)[0].logits_parameter().numpy()
  for variable in actor.trainable_variables:
    variable.assign(variable + 1.0)
  np.testing.assert_array_equal(copy(observation)[0].logits_parameter().numpy(),
                                before)
  assert not np.array_equal(actor(observation)[0].logits_parameter().numpy(),
                            before)
