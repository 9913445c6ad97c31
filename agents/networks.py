"""Networks over the environment's observation, shared by all agents.

`ObservationEncoder` turns the observation dict (session history and
aggregates) into one feature vector; it has no weights, so the same
instance serves every network of an agent (and their target copies): each
`ItemScoringNetwork` and, as its `preprocessing_combiner`, PPO's value
network.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.networks import (mask_splitter_network, network, utils,
                                value_network)
from tf_agents.specs import distribution_spec, tensor_spec
from tf_agents.typing import types
from tf_agents.utils import nest_utils

from lerl_recsim import environment as environment_lib
from lerl_recsim import tf_environment


class ObservationEncoder(tf.keras.layers.Layer):
  """Observation dict -> float32 [B, F] features.

  Per history step: the categories of the items shown (multi-hot, summed
  over the slate), clicks and engagement; for the session: the share of
  items per category, the mean engagement per category shown, the session
  length (scaled by the cap) and the mean engagement.
  """

  def __init__(self, item_categories: np.ndarray, max_session_length: int,
               **kwargs):
    super().__init__(**kwargs)
    categories = np.asarray(item_categories, np.float32)
    # Row 0 is the padding item (-1 in the history) with no category.
    self._categories = tf.constant(np.concatenate(
        [np.zeros((1, categories.shape[1]), np.float32), categories]))
    self._max_session_length = float(max_session_length)

  def call(self, observation: dict[str, tf.Tensor]) -> tf.Tensor:
    items = tf.cast(observation["item_history"], tf.int32)  # [B, H, k]
    shown = tf.reduce_sum(tf.gather(self._categories, items + 1), axis=-2)
    batch = tf.shape(items)[0]
    counts = observation["category_counts"]
    length = tf.cast(observation["session_length"], tf.float32)[:, None]
    features = [
        tf.reshape(shown, [batch, -1]),
        tf.reshape(observation["click_history"], [batch, -1]),
        tf.reshape(observation["response_history"], [batch, -1]),
        counts / tf.maximum(length, 1.0),
        observation["category_engagement"] / (counts + 1.0),
        length / self._max_session_length,
        tf.cast(observation["mean_engagement"], tf.float32)[:, None],
    ]
    return tf.concat(features, axis=-1)

  def get_config(self) -> dict:
    config = super().get_config()
    config.update(item_categories=self._categories.numpy()[1:].tolist(),
                  max_session_length=self._max_session_length)
    return config


def split_spec(observation_spec: types.NestedTensorSpec) -> types.NestedTensorSpec:
  """The spec of what networks see: the observation without the mask."""
  return environment_lib.splitter(observation_spec)[0]


class ItemScoringNetwork(network.Network):
  """Scores every item as <user state, item representation> + item bias.

  The item representation is a learned projection of the item's categories
  plus a small free embedding, so what is learned about one item carries to
  the others of its categories: with hundreds of items and few visits each,
  a separate output per item learns far slower. Serves as a DQN Q-network,
  a bandit reward network and (through `ItemCategoricalNetwork`) PPO's actor.
  """

  def __init__(self, input_tensor_spec: types.NestedTensorSpec,
               action_spec: types.BoundedTensorSpec,
               item_categories: np.ndarray, encoder: ObservationEncoder,
               fc_layer_params: Sequence[int], item_embedding_size: int = 8,
               name: str = "ItemScoringNetwork"):
    super().__init__(input_tensor_spec, state_spec=(), name=name)
    num_items = int(action_spec.maximum) - int(action_spec.minimum) + 1
    categories = np.asarray(item_categories, np.float32)
    if categories.shape[0] != num_items:
      raise ValueError(f"item_categories has {categories.shape[0]} rows for "
                       f"{num_items} actions")
    self._encoder = encoder
    self._hidden = [tf.keras.layers.Dense(units, activation="relu")
                    for units in fc_layer_params]
    width = int(fc_layer_params[-1]) if fc_layer_params else 64
    self._state_projection = tf.keras.layers.Dense(width)
    self._item_categories = tf.constant(categories)
    self._item_embedding = tf.keras.layers.Embedding(num_items,
                                                     item_embedding_size)
    self._item_projection = tf.keras.layers.Dense(width)
    self._item_bias = tf.keras.layers.Embedding(
        num_items, 1, embeddings_initializer="zeros")
    self._item_ids = tf.range(num_items)

  def call(self, observation, step_type=None, network_state=(),
           training=False):
    del step_type
    # PPO's loss calls its actor on [B, T] batches; the encoder takes [B].
    squash = utils.BatchSquash(nest_utils.get_outer_rank(
        observation, self.input_tensor_spec))
    state = self._user_state(tf.nest.map_structure(squash.flatten,
                                                   observation), training)
    items, bias = self._item_representations()
    scores = tf.matmul(state, items, transpose_b=True) + bias
    return squash.unflatten(scores), network_state

  def item_scores(self, observation: types.NestedTensor, items: tf.Tensor,
                  training: bool = False) -> tf.Tensor:
    """The scores of one given item per row, [B]: the entries `items` of
    `call`'s [B, num_items] scores, without scoring every item (what a TD
    loss needs of the taken action and of a target network)."""
    state = self._user_state(observation, training)
    representations, bias = self._item_representations()
    items = tf.cast(items, tf.int32)
    return (tf.reduce_sum(state * tf.gather(representations, items), -1)
            + tf.gather(bias, items))

  def _user_state(self, observation: types.NestedTensor,
                  training: bool) -> tf.Tensor:
    """[B, d]: the encoded observation through the hidden layers."""
    state = self._encoder(observation)
    for layer in self._hidden:
      state = layer(state, training=training)
    return self._state_projection(state)

  def _item_representations(self) -> tuple[tf.Tensor, tf.Tensor]:
    """[num_items, d] item representations and [num_items] biases."""
    items = self._item_projection(tf.concat(
        [self._item_categories, self._item_embedding(self._item_ids)], -1))
    return items, tf.squeeze(self._item_bias(self._item_ids), -1)


def mask_scores(scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """Scores with excluded items (mask False) at the lowest float: they never
  win an argmax or a top-k, and as logits get zero probability (-inf would
  give NaNs in TFP's log-probabilities and entropies)."""
  return tf.where(tf.cast(mask, tf.bool), scores,
                  tf.constant(scores.dtype.min, scores.dtype))


class ItemCategoricalNetwork(network.DistributionNetwork):
  """PPO's actor: a categorical over items whose logits are the scores of an
  `ItemScoringNetwork`, so a policy gradient on one item moves the items
  of its categories too, as the Q-network's TD updates do.

  Takes the mask as `mask` (from `MaskSplitterNetwork(passthrough_mask=True)`)
  and gives excluded items zero probability.
  """

  def __init__(self, scores: ItemScoringNetwork,
               action_spec: types.BoundedTensorSpec,
               name: str = "ItemCategoricalNetwork"):
    num_items = int(action_spec.maximum) - int(action_spec.minimum) + 1
    logits = tf.TensorSpec([num_items], tf.float32, name=f"{name}_logits")
    output_spec = distribution_spec.DistributionSpec(
        tfp.distributions.Categorical, {"logits": logits},
        sample_spec=action_spec, dtype=action_spec.dtype)
    super().__init__(scores.input_tensor_spec, state_spec=(),
                     output_spec=output_spec, name=name)
    self._scores = scores

  def call(self, observation, step_type=None, network_state=(),
           training=False, mask=None):
    logits, _ = self._scores(observation, step_type=step_type,
                             training=training)
    if mask is not None:
      logits = mask_scores(logits, mask)
    return self.output_spec.build_distribution(logits=logits), network_state

  def copy(self, **kwargs):
    # The inherited copy would reuse `scores`, so share its weights.
    return super().copy(**{"scores": self._scores.copy(), **kwargs})


def item_q_network(observation_spec: types.NestedTensorSpec,
                   action_spec: types.BoundedTensorSpec,
                   item_categories: np.ndarray, encoder: ObservationEncoder,
                   fc_layer_params: Sequence[int]) -> ItemScoringNetwork:
  """Q-values of every item from the encoded observation (mask excluded)."""
  return ItemScoringNetwork(split_spec(observation_spec), action_spec,
                            item_categories, encoder, fc_layer_params)


def masked_actor_and_value_networks(
    observation_spec: types.NestedTensorSpec,
    action_spec: types.BoundedTensorSpec, item_categories: np.ndarray,
    encoder: ObservationEncoder,
    fc_layer_params: Sequence[int]) -> tuple[network.Network, network.Network]:
  """PPO networks: an item-scoring actor that gets the mask through
  TF-Agents' `MaskSplitterNetwork`, so excluded items get zero probability,
  and a value network over the observation without the mask."""
  actor = ItemCategoricalNetwork(
      ItemScoringNetwork(split_spec(observation_spec), action_spec,
                         item_categories, encoder, fc_layer_params),
      action_spec)
  value = value_network.ValueNetwork(
      split_spec(observation_spec), preprocessing_combiner=encoder,
      fc_layer_params=tuple(fc_layer_params))
  return (
      mask_splitter_network.MaskSplitterNetwork(
          environment_lib.splitter, actor, passthrough_mask=True,
          input_tensor_spec=observation_spec),
      mask_splitter_network.MaskSplitterNetwork(
          environment_lib.splitter, value, input_tensor_spec=observation_spec))


@dataclasses.dataclass(frozen=True)
class AgentInputs:
  """What every agent family builds its networks from."""

  time_step_spec: types.TimeStep
  action_spec: types.BoundedTensorSpec
  item_categories: np.ndarray
  encoder: ObservationEncoder


def agent_inputs(env: Any, agent_name: str,
                 slates_supported: bool = False) -> AgentInputs:
  """Tensor specs and the observation encoder for an agent on `env` (a
  scenario environment, planned or not); rejects slates it cannot handle."""
  scenario = base_environment(env).scenario
  if scenario.slate_size != 1 and not slates_supported:
    raise ValueError(
        f"the {agent_name} agents recommend one item per step; slate_size="
        f"{scenario.slate_size} is supported only by the DQN agents")
  return AgentInputs(
      time_step_spec=tensor_spec.from_spec(env.time_step_spec()),
      action_spec=tensor_spec.from_spec(env.action_spec()),
      item_categories=scenario.items.categories,
      encoder=ObservationEncoder(scenario.items.categories,
                                 scenario.max_session_length))


def base_environment(env: Any) -> (environment_lib.RecSimEnvironment
                                  | tf_environment.TFRecSimEnvironment):
  """The scenario environment under any wrappers."""
  while not isinstance(env, (environment_lib.RecSimEnvironment,
                             tf_environment.TFRecSimEnvironment)):
    env = env.wrapped_env()
  return env
