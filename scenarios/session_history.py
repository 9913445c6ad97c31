"""What a recommender can observe of a session, kept as a RecSim NG entity.

The history (items shown, which one was chosen, engagement) and a few
session aggregates form the recommender's observation; the environment's
per-episode metrics are computed from the same record, so the two can never
disagree.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from gym import spaces
from recsim_ng.core import value
from recsim_ng.lib.tensorflow import entity, field_spec

Value = value.Value
ValueSpec = value.ValueSpec
Space = field_spec.Space

# Fields of the history that form the recommender's observation.
OBSERVED_FIELDS = ("item_history", "click_history", "response_history",
                   "category_counts", "category_engagement", "session_length",
                   "mean_engagement")
# Fields that `metrics.session_metrics` summarises when a session ends.
SESSION_TOTALS = ("total_engagement", "session_length", "category_counts",
                  "repeats")


def item_category_shares(categories: tf.Tensor) -> tf.Tensor:
  """Multi-hot categories normalised so each item counts once: [..., C]."""
  return categories / tf.reduce_sum(categories, axis=-1, keepdims=True)


class SessionHistory(entity.Entity):
  """Recent slates and responses plus whole-session aggregates.

  State (batched over users U, history length H, slate size k, C categories):
    item_history int32 [U, H, k]: items shown, most recent last, -1 padding.
    click_history float32 [U, H, k]: 1 at the chosen position.
    response_history float32 [U, H, k]: engagement at the chosen position.
    category_counts float32 [U, C]: items shown per category this session
      (an item with several categories counts 1/n for each).
    category_engagement float32 [U, C]: engagement earned per category.
    session_length int32 [U]: steps so far.
    total_engagement float32 [U]: cumulative engagement (the return).
    mean_engagement float32 [U]: total_engagement / session_length.
    repeats float32 [U]: steps whose slate shared a category with the
      previous slate.
    previous_categories float32 [U, C]: categories of the previous slate.
  """

  def __init__(self, num_users: int, history_length: int, slate_size: int,
               num_categories: int):
    super().__init__(name="SessionHistory")
    self._u, self._h, self._k, self._c = (num_users, history_length,
                                          slate_size, num_categories)

  def initial_state(self) -> Value:
    u, h, k, c = self._u, self._h, self._k, self._c
    return Value(
        item_history=tf.fill([u, h, k], -1),
        click_history=tf.zeros([u, h, k]),
        response_history=tf.zeros([u, h, k]),
        category_counts=tf.zeros([u, c]),
        category_engagement=tf.zeros([u, c]),
        session_length=tf.zeros([u], tf.int32),
        total_engagement=tf.zeros([u]),
        mean_engagement=tf.zeros([u]),
        repeats=tf.zeros([u]),
        previous_categories=tf.zeros([u, c]))

  def next_state(self, previous: Value, slate_docs: Value,
                 response: Value) -> Value:
    clicks = tf.one_hot(response.get("choice"), self._k)  # no-click -> zeros
    responses = clicks * response.get("engagement")[:, None]
    shares = item_category_shares(slate_docs.get("categories"))  # [U, k, C]
    shown = tf.cast(tf.reduce_sum(shares, axis=1) > 0.0, tf.float32)
    repeated = tf.reduce_sum(shown * previous.get("previous_categories"), -1) > 0

    def push(history: tf.Tensor, latest: tf.Tensor) -> tf.Tensor:
      return tf.concat([history[:, 1:], latest[:, None]], axis=1)

    length = previous.get("session_length") + 1
    total = previous.get("total_engagement") + response.get("engagement")
    return Value(
        item_history=push(previous.get("item_history"),
                          slate_docs.get("item_id")),
        click_history=push(previous.get("click_history"), clicks),
        response_history=push(previous.get("response_history"), responses),
        category_counts=previous.get("category_counts") + tf.reduce_sum(
            shares, axis=1),
        category_engagement=previous.get("category_engagement") +
        tf.einsum("uk,ukc->uc", responses, shares),
        session_length=length,
        total_engagement=total,
        mean_engagement=total / tf.cast(length, tf.float32),
        repeats=previous.get("repeats") + tf.cast(repeated, tf.float32),
        previous_categories=shown)

  def specs(self) -> ValueSpec:
    u, h, k, c = self._u, self._h, self._k, self._c

    def box(shape, dtype=np.float32):
      return Space(spaces.Box(-np.inf, np.inf, shape=shape, dtype=dtype))

    return ValueSpec(
        item_history=box((u, h, k), np.int32),
        click_history=box((u, h, k)),
        response_history=box((u, h, k)),
        category_counts=box((u, c)),
        category_engagement=box((u, c)),
        session_length=box((u,), np.int32),
        total_engagement=box((u,)),
        mean_engagement=box((u,)),
        repeats=box((u,)),
        previous_categories=box((u, c)))
