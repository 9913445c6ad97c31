"""A user whose interests evolve and who tires of repeated categories.

Interests drift toward consumed content (RecSim's interest evolution), so a
policy that keeps serving one category reinforces it; satiation makes that
same category less appealing and less engaging, and spills over to the other
categories of its semantic group.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Mapping

import edward2 as ed
import numpy as np
import tensorflow as tf
from gym import spaces
from recsim_ng.core import value
from recsim_ng.entities.choice_models import selectors
from recsim_ng.entities.recommendation import user
from recsim_ng.entities.state_models import dynamic
from recsim_ng.lib.tensorflow import field_spec

from lerl_recsim.scenarios import catalogue as catalogue_lib
from lerl_recsim.scenarios import params

Value = value.Value
ValueSpec = value.ValueSpec
Space = field_spec.Space


@dataclasses.dataclass(frozen=True)
class UserParams(params.Params):
  """Parameters of `SatiationUser`; defaults are the documented scenario.

  Attributes:
    group_interest_scale: std of a user's interest in a semantic group.
    favourite_group_boost: extra interest in one random favourite group.
    category_interest_noise: std of a category's deviation from its group.
    interest_step: how far interests move toward a consumed item (0..1).
    satiation_rate: growth of a category's satiation per full exposure.
    satiation_decay: fraction of satiation kept from one step to the next.
    spillover: share of an exposure felt by the other categories of a group.
    satiation_weight: how much satiation lowers an item's appeal.
    satiation_engagement_weight: share of engagement a fully satiated user
      loses.
    choice_scale: logit scale of the multinomial-logit choice.
    no_click_logit: logit of the no-click option.
    engagement_scale: slope of engagement in affinity + quality.
  """

  group_interest_scale: float = 0.5
  favourite_group_boost: float = 0.5
  category_interest_noise: float = 0.3
  interest_step: float = 0.05
  satiation_rate: float = 0.2
  satiation_decay: float = 0.8
  spillover: float = 0.3
  satiation_weight: float = 1.0
  satiation_engagement_weight: float = 0.5
  choice_scale: float = 3.0
  no_click_logit: float = 0.0
  engagement_scale: float = 2.0

  _RANGES: ClassVar[Mapping[str, tuple[float | None, float | None]]] = {
      "group_interest_scale": (0.0, None),
      "favourite_group_boost": (None, None),
      "category_interest_noise": (0.0, None),
      "interest_step": (0.0, 1.0),
      "satiation_rate": (0.0, 1.0),
      "satiation_decay": (0.0, 1.0),
      "spillover": (0.0, 1.0),
      "satiation_weight": (0.0, None),
      "satiation_engagement_weight": (0.0, 1.0),
      "choice_scale": (0.0, None),
      "no_click_logit": (None, None),
      "engagement_scale": (0.0, None),
  }


def item_satiation(satiation: tf.Tensor, categories: tf.Tensor) -> tf.Tensor:
  """Mean satiation over each item's categories: [U, C], [U|1, k, C] -> [U, k]."""
  return (tf.reduce_sum(satiation[:, None, :] * categories, axis=-1) /
          tf.reduce_sum(categories, axis=-1))


def slate_exposure(categories: tf.Tensor) -> tf.Tensor:
  """Share of the slate in each category, multi-label items split: [U, C]."""
  per_item = categories / tf.reduce_sum(categories, axis=-1, keepdims=True)
  return tf.reduce_mean(per_item, axis=1)


class SatiationUser(user.User):
  """RecSim NG user entity with interest evolution and grouped satiation."""

  def __init__(self, config: dict, catalogue: catalogue_lib.Catalogue,
               user_params: UserParams,
               interest_pool: np.ndarray | None = None):
    """Args:
      config: RecSim NG config with `num_users` and `num_topics`.
      catalogue: the categories and their semantic groups.
      user_params: dynamics parameters.
      interest_pool: optional float [P, num_topics] interest vectors (e.g.
        user factors calibrated from real data); each new user draws one
        uniformly. Without it, interests are drawn per semantic group.
    """
    super().__init__(config)
    if interest_pool is not None and (
        interest_pool.ndim != 2 or interest_pool.shape[1] != self._num_topics
        or len(interest_pool) == 0):
      raise ValueError(
          f"interest_pool has shape {interest_pool.shape}; expected "
          f"(P >= 1, {self._num_topics})")
    self._interest_pool = (None if interest_pool is None else
                           tf.constant(interest_pool, tf.float32))
    self._params = user_params
    self._catalogue = catalogue
    self._num_categories = catalogue.num_categories
    self._same_group = tf.constant(catalogue.same_group_matrix())
    self._group_of = tf.constant(catalogue.category_group)
    self._choice_model = selectors.MultinomialLogitChoiceModel(
        batch_shape=(self._num_users,),
        nochoice_logits=tf.fill([self._num_users], user_params.no_click_logit))
    # Interests move toward consumed items: x' = x + step * (f - x).
    self._interest_model = dynamic.ControlledLinearScaledGaussianStateModel(
        dim=self._num_topics,
        control_scales=tf.fill([self._num_users], user_params.interest_step))

  def initial_state(self) -> Value:
    satiation = tf.zeros([self._num_users, self._num_categories])
    if self._interest_pool is not None:
      drawn = ed.Categorical(
          logits=tf.zeros([self._num_users, self._interest_pool.shape[0]]),
          name="pooled_user")
      return Value(interest=tf.gather(self._interest_pool, drawn),
                   satiation=satiation)
    p = self._params
    num_groups = self._catalogue.num_groups
    group_interest = ed.Normal(
        loc=tf.zeros([self._num_users, num_groups]),
        scale=p.group_interest_scale, name="group_interest")
    favourite = ed.Categorical(
        logits=tf.zeros([self._num_users, num_groups]), name="favourite_group")
    group_interest = group_interest + p.favourite_group_boost * tf.one_hot(
        favourite, num_groups)
    category_noise = ed.Normal(
        loc=tf.zeros([self._num_users, self._num_categories]),
        scale=p.category_interest_noise, name="category_interest")
    interest = tf.clip_by_value(
        tf.gather(group_interest, self._group_of, axis=1) + category_noise,
        -1.0, 1.0)
    return Value(interest=interest, satiation=satiation)

  def next_state(self, previous_state: Value, user_response: Value,
                 slate_docs: Value) -> Value:
    p = self._params
    interest = previous_state.get("interest")
    chosen = selectors.get_chosen(
        Value(features=slate_docs.get("features")), user_response.get("choice"),
        nochoice_value=0).get("features")
    clicked = user_response.get("clicked")[:, None]
    interest = self._interest_model.next_state(
        Value(state=interest),
        Value(input=clicked * (chosen - interest))).get("state")
    exposure = slate_exposure(slate_docs.get("categories"))
    felt = tf.minimum(1.0, exposure + p.spillover * tf.linalg.matvec(
        self._same_group, exposure))
    kept = p.satiation_decay * previous_state.get("satiation")
    satiation = kept + p.satiation_rate * (1.0 - kept) * felt
    return Value(interest=tf.identity(interest), satiation=satiation)

  def observation(self, user_state: Value) -> Value:
    del user_state
    return Value()

  def appeal(self, user_state: Value, slate_docs: Value) -> tuple[tf.Tensor, tf.Tensor]:
    """Choice logits and engagement-if-clicked of each item: [U, k].

    Item fields may have a leading dimension of 1 to score one item list
    for every user.
    """
    p = self._params
    affinity = tf.reduce_sum(
        user_state.get("interest")[:, None, :] * slate_docs.get("features"),
        axis=-1)
    satiation = item_satiation(user_state.get("satiation"),
                               slate_docs.get("categories"))
    logits = p.choice_scale * (affinity - p.satiation_weight * satiation)
    engagement = (1.0 - p.satiation_engagement_weight * satiation) * tf.sigmoid(
        p.engagement_scale * (affinity + slate_docs.get("quality")))
    return logits, engagement

  def next_response(self, previous_state: Value, slate_docs: Value) -> Value:
    logits, engagement = self.appeal(previous_state, slate_docs)
    choice = self._choice_model.choice(logits).get("choice")
    slate_size = tf.shape(logits)[-1]
    clicked = tf.cast(choice < tf.cast(slate_size, choice.dtype), tf.float32)
    chosen_engagement = selectors.get_chosen(
        Value(engagement=engagement), choice, nochoice_value=0.0)
    return Value(
        choice=tf.cast(choice, tf.int32),
        clicked=clicked,
        engagement=chosen_engagement.get("engagement"))

  def expected_engagement(self, user_state: Value,
                          corpus_state: Value) -> tf.Tensor:
    """E[engagement] of each item shown alone: [U, N]; for the oracle only."""
    items = Value(
        features=corpus_state.get("features")[None],
        categories=corpus_state.get("categories")[None],
        quality=corpus_state.get("quality")[None])
    logits, engagement = self.appeal(user_state, items)
    return tf.sigmoid(logits - self._params.no_click_logit) * engagement

  def specs(self) -> ValueSpec:
    u, c = self._num_users, self._num_categories
    state = ValueSpec(
        interest=Space(spaces.Box(-np.inf, np.inf, shape=(u, self._num_topics))),
        satiation=Space(spaces.Box(0.0, 1.0, shape=(u, c))))
    response = ValueSpec(
        choice=Space(spaces.Box(0, np.inf, shape=(u,), dtype=np.int32)),
        clicked=Space(spaces.Box(0.0, 1.0, shape=(u,))),
        engagement=Space(spaces.Box(0.0, 1.0, shape=(u,))))
    return state.prefixed_with("state").union(
        ValueSpec().prefixed_with("observation")).union(
            response.prefixed_with("response"))
