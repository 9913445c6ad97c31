"""A static corpus of items, each with categories, a quality and features."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
from gym import spaces
from recsim_ng.core import value
from recsim_ng.entities.recommendation import corpus
from recsim_ng.lib.tensorflow import field_spec

from lerl_recsim.scenarios import catalogue as catalogue_lib

Value = value.Value
ValueSpec = value.ValueSpec
Space = field_spec.Space


@dataclasses.dataclass(frozen=True)
class Items:
  """The item table of a scenario, fixed for its lifetime.

  Attributes:
    categories: float32 [N, C], multi-hot category membership (one or more).
    quality: float32 [N], how good an item is regardless of who watches it.
    features: float32 [N, D], the item's position in the interest space.
    length: float32 [N], how long an item takes to consume (minutes).
  """

  categories: np.ndarray
  quality: np.ndarray
  features: np.ndarray
  length: np.ndarray

  @property
  def num_items(self) -> int:
    return self.categories.shape[0]

  @property
  def primary_category(self) -> np.ndarray:
    """int32 [N]: the first category of each item."""
    return np.argmax(self.categories, axis=1).astype(np.int32)


def sample_category_items(
    catalogue: catalogue_lib.Catalogue,
    num_items: int,
    rng: np.random.Generator,
    quality_spread: float = 0.5,
    quality_noise: float = 0.2,
    feature_noise: float = 0.1,
    item_length: float = 4.0,
) -> Items:
  """Draws single-category items spread evenly over the categories.

  Each category has its own mean quality drawn from U(-spread, spread); an
  item's features are the one-hot vector of its category plus Gaussian noise,
  so the interest space is the category space.
  """
  num_categories = catalogue.num_categories
  if num_items < num_categories:
    raise ValueError(
        f"num_items={num_items} is smaller than the {num_categories} "
        "categories; every category needs at least one item.")
  category = rng.permutation(np.arange(num_items) % num_categories)
  category_quality = rng.uniform(-quality_spread, quality_spread, num_categories)
  one_hot = np.eye(num_categories, dtype=np.float32)[category]
  return Items(
      categories=one_hot,
      quality=(category_quality[category] +
               rng.normal(0.0, quality_noise, num_items)).astype(np.float32),
      features=(one_hot + rng.normal(0.0, feature_noise, one_hot.shape)).astype(
          np.float32),
      length=np.full(num_items, item_length, np.float32))


class StaticItemCorpus(corpus.Corpus):
  """A RecSim NG corpus whose items never change during a simulation."""

  def __init__(self, config: dict, items: Items):
    super().__init__(config)
    self._items = items

  def initial_state(self) -> Value:
    return Value(
        categories=tf.constant(self._items.categories),
        quality=tf.constant(self._items.quality),
        features=tf.constant(self._items.features),
        length=tf.constant(self._items.length))

  def next_state(self, previous_state: Value, user_response: Value,
                 slate_docs: Value) -> Value:
    del user_response, slate_docs
    return previous_state.map(tf.identity)

  def available_documents(self, corpus_state: Value) -> Value:
    """Every item's fields and its `item_id`: [N, ...]."""
    return Value(item_id=tf.range(self._items.num_items)).union(
        corpus_state.map(tf.identity))

  def slate_docs(self, corpus_state: Value, slate_request: Value) -> Value:
    """The available docs of each user's slate: [U, k, ...]."""
    items = slate_request.get("items")
    return self.available_documents(corpus_state).map(
        lambda field: tf.gather(field, items))

  def specs(self) -> ValueSpec:
    n, c = self._items.categories.shape
    d = self._items.features.shape[1]
    state = ValueSpec(
        categories=Space(spaces.Box(0.0, 1.0, shape=(n, c))),
        quality=Space(spaces.Box(-np.inf, np.inf, shape=(n,))),
        features=Space(spaces.Box(-np.inf, np.inf, shape=(n, d))),
        length=Space(spaces.Box(0.0, np.inf, shape=(n,))))
    available = ValueSpec(item_id=Space(spaces.Box(
        0, n - 1, shape=(n,), dtype=np.int32))).union(state)
    return state.prefixed_with("state").union(
        available.prefixed_with("available_docs"))
