"""A small learnable RecSim NG recommender for the scenario's story.

Item logits are bilinear in what the session history says about the user
(the share of each category shown so far, the engagement earned per
category) and what the item is (its categories, its quality). Starting from
zero weights, it recommends uniformly at random; a REINFORCE step
(`train_softmax_recommender`) moves it toward items that keep users engaged.
"""

from __future__ import annotations

from typing import Any, Mapping

import edward2 as ed
import tensorflow as tf
from recsim_ng.core import value
from recsim_ng.entities.recommendation import recommender
from recsim_ng.lib.tensorflow import field_spec

Value = value.Value
ValueSpec = value.ValueSpec

# The item fields a slate carries (the corpus's available docs).
DOC_FIELDS = ("item_id", "categories", "quality", "features", "length")


class SoftmaxRecommender(recommender.BaseRecommender):
  """Draws one item per user from a softmax over the catalogue.

  Stateless: what it knows of a user is the observation the story passes
  (`story.observation`, the session history a TF-Agents policy sees).
  """

  def __init__(self, config: Mapping[str, Any],
               name: str = "SoftmaxRecommender"):
    super().__init__(config, name=name)
    if self._slate_size != 1:
      raise ValueError(
          f"SoftmaxRecommender recommends one item; slate_size="
          f"{self._slate_size} is not supported")
    num_categories = config["num_categories"]
    # Rows: user features (category shares, engagement per step by
    # category, a constant); columns: item features (categories, quality).
    self._weights = tf.Variable(
        tf.zeros([2 * num_categories + 1, num_categories + 1]), name="weights")

  def logits(self, observation: Value, available_docs: Value) -> tf.Tensor:
    """float32 [B, N]: every item's logit for each of B observations."""
    steps = tf.maximum(
        tf.cast(observation.get("session_length"), tf.float32), 1.0)[:, None]
    user = tf.concat([
        observation.get("category_counts") / steps,
        observation.get("category_engagement") / steps,
        tf.ones_like(steps)], axis=-1)
    item = tf.concat([available_docs.get("categories"),
                      available_docs.get("quality")[:, None]], axis=-1)
    return tf.linalg.matmul(tf.linalg.matmul(user, self._weights), item,
                            transpose_b=True)

  def initial_state(self) -> Value:
    return Value()

  def next_state(self, previous_state: Value, user_response: Value,
                 slate_docs: Value) -> Value:
    del previous_state, user_response, slate_docs
    return Value()

  def slate_docs(self, previous_state: Value, user_obs: Value,
                 available_docs: Value) -> Value:
    del previous_state
    item = ed.Categorical(logits=self.logits(user_obs, available_docs),
                          dtype=tf.int32)
    return available_docs.map(lambda field: tf.gather(field, item[:, None]))

  def specs(self) -> ValueSpec:
    slate = ValueSpec(**{name: field_spec.FieldSpec() for name in DOC_FIELDS})
    return ValueSpec().prefixed_with("state").union(
        slate.prefixed_with("slate"))
