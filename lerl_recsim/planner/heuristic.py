"""A planner without an LLM: the fallback, and the ablation for the LLM.

Each category is scored by how the user responded to it (mean engagement,
relative to the user's largest) minus how much of it, and of its semantic
group, the user saw in the recent window. The plan takes the best category of
as many different groups as it can, then fills up with the next best.
Saturated categories are left out as in LLM plans. Ties are broken by a
permutation drawn from the seed once, so a plan is a pure function of the
history: same seed and history, same plan.

One implementation serves both callers: `BatchHeuristic` computes ranking and
plan for a whole batch of users in TensorFlow (inside the training graph it
runs at every step for every user), and `HeuristicPlanner` feeds it
`UserHistory` objects for the Python planner interface.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from lerl_recsim.planner.history import UserHistory
from lerl_recsim.planner.validation import PlanRules
from lerl_recsim.scenarios.catalogue import Catalogue


class CategorySteps(NamedTuple):
  """A batch of users' recent steps at category level, most recent last.

  Attributes:
    shown: float [B, H, C], how many items of each category each step
      showed (0 on padding steps).
    engagement: float64 [B, H], the response at each step.
    clicked: bool [B, H].
    valid: bool [B, H]; padding (steps before the session began) comes first.
  """

  shown: tf.Tensor
  engagement: tf.Tensor
  clicked: tf.Tensor
  valid: tf.Tensor


# Scores are compared after rounding to 1 / TIE_RESOLUTION; the rounded
# scores must lie within +-2**SCORE_BITS (`BatchHeuristic` checks its
# penalties against this).
TIE_RESOLUTION = 1e9
SCORE_BITS = 50

# Histories are padded to a multiple of this many steps, so that the
# compiled heuristic is traced for few lengths.
PAD_STEPS = 10


def histories_to_steps(histories: Sequence[UserHistory],
                       num_categories: int) -> CategorySteps:
  """`UserHistory` objects as `CategorySteps` tensors, padded at the front
  to a multiple of PAD_STEPS steps, and with empty histories to a power of
  two users: the compiled heuristic then meets few shapes (XLA compiles
  once per shape)."""
  longest = max([len(h.steps) for h in histories] + [1])
  length = -(-longest // PAD_STEPS) * PAD_STEPS
  batch = 1 << max(len(histories) - 1, 0).bit_length()
  shown = np.zeros((batch, length, num_categories), np.float32)
  engagement = np.zeros((batch, length), np.float64)
  clicked = np.zeros((batch, length), bool)
  valid = np.zeros((batch, length), bool)
  for b, history in enumerate(histories):
    offset = length - len(history.steps)
    for t, step in enumerate(history.steps, offset):
      np.add.at(shown[b, t], list(step.categories), 1.0)
      engagement[b, t] = step.engagement
      clicked[b, t] = step.clicked
      valid[b, t] = True
  return CategorySteps(shown=tf.constant(shown),
                       engagement=tf.constant(engagement),
                       clicked=tf.constant(clicked), valid=tf.constant(valid))


def observation_steps(observation: dict[str, tf.Tensor],
                      item_categories: tf.Tensor) -> CategorySteps:
  """An environment observation batch as `CategorySteps`, in the graph.

  Args:
    observation: the recommender's observation (without the mask).
    item_categories: float [N, C], 1 where an item has a category.
  """
  items = tf.cast(observation["item_history"], tf.int32)  # [B, H, k]
  padded = tf.concat([tf.zeros_like(item_categories[:1]), item_categories], 0)
  return CategorySteps(
      shown=tf.reduce_sum(tf.gather(padded, items + 1), axis=2),
      engagement=tf.cast(tf.reduce_sum(observation["response_history"], -1),
                         tf.float64),
      clicked=tf.reduce_sum(observation["click_history"], -1) > 0,
      valid=items[:, :, 0] >= 0)


def recent_steps(valid: tf.Tensor, window: int) -> tf.Tensor:
  """bool [B, H]: the last `window` valid steps of each user."""
  from_end = tf.cumsum(tf.cast(valid, tf.int32), axis=1, reverse=True)
  return valid & (from_end <= window)


def saturated_categories(steps: CategorySteps, window: int) -> tf.Tensor:
  """bool [B, C]: categories shown at each of the last `window` steps (none
  when fewer steps exist)."""
  recent = recent_steps(steps.valid, window)
  shown = tf.cast(steps.shown > 0, tf.int32) * tf.cast(recent, tf.int32)[..., None]
  enough = tf.reduce_sum(tf.cast(recent, tf.int32), axis=1) >= window
  return (tf.reduce_sum(shown, axis=1) >= window) & enough[:, None]


def _computed_once(x: tf.Tensor) -> tf.Tensor:
  """`x`, passed through a (trivial) reduction. XLA fuses elementwise ops
  into each of their consumers, and the pairwise comparisons read every
  key 2C times: they would recompute the scores' arithmetic per pair (2.5x
  the selection's time, measured). XLA does not fuse a reduction into its
  consumers, so `x` is computed once."""
  return tf.reduce_max(x[..., None] + tf.zeros([2], x.dtype), axis=-1)


def _places(keys: tf.Tensor) -> tf.Tensor:
  """int32 [B, C]: each entry's place when a row's distinct `keys` are
  ordered highest first (by comparing every pair: no sort, which costs
  XLA several times more at these sizes)."""
  keys = _computed_once(keys)
  return tf.reduce_sum(tf.cast(keys[:, None, :] > keys[:, :, None], tf.int32),
                       axis=2)


def _ids_in_place_order(places: tf.Tensor) -> tf.Tensor:
  """int32 [B, C]: the ids (column indices) of `places` (a permutation of
  0..C-1 per row) listed by place: the inverse permutation."""
  num = places.shape[1]
  at = places[:, None, :] == tf.range(num)[None, :, None]  # [B, place, id]
  return tf.reduce_sum(tf.where(at, tf.range(num)[None, None, :], 0), axis=2)


class BatchHeuristic(tf.Module):
  """The heuristic's ranking and plan for a batch of users, in TensorFlow.

  Arithmetic is float64, and scores within 1e-9 of each other are ties, so
  rankings are those of a plain per-user computation in exact arithmetic,
  whatever XLA fuses. Each category's place in the order is one int64
  (`_order_keys`: saturation, rounded score, tie-break priority), so that
  comparing two categories is one comparison: the plan is chosen by
  comparing every pair of categories at every training step.
  """

  def __init__(self, catalogue: Catalogue, rules: PlanRules, *, window: int,
               size: int, seed: int, group_penalty: float,
               category_penalty: float) -> None:
    super().__init__(name="batch_heuristic")
    bound = 1.0 + abs(group_penalty) + abs(category_penalty)
    if bound * TIE_RESOLUTION >= 2.0**SCORE_BITS:
      raise ValueError(
          f"group_penalty={group_penalty}, category_penalty={category_penalty}:"
          f" scores could reach {bound:g}; expected penalties whose absolute "
          f"values sum below {2.0**SCORE_BITS / TIE_RESOLUTION - 1:g}")
    tie_bits = max(catalogue.num_categories - 1, 1).bit_length()
    if SCORE_BITS + 2 + tie_bits > 63:
      raise ValueError(f"{catalogue.num_categories} categories; expected at "
                       f"most {2**(61 - SCORE_BITS)}")
    self.rules = rules
    self.window = window
    self.size = size
    self.num_categories = catalogue.num_categories
    groups = np.asarray(catalogue.category_group, np.int32)
    self._groups = tf.constant(groups)
    self._group_onehot = tf.constant(
        np.eye(catalogue.num_groups, dtype=np.float32)[groups])  # [C, G]
    priority = np.random.default_rng(seed).permutation(catalogue.num_categories)
    # Equal scores: the category of lower priority comes first.
    self._tie_break = tf.constant(catalogue.num_categories - 1 - priority,
                                  tf.int64)
    self._tie_scale = 2**tie_bits
    self._group_penalty = float(group_penalty)
    self._category_penalty = float(category_penalty)
    self._same_group = tf.constant(groups[:, None] == groups[None, :])
    # XLA fuses the many small ops of ranking and picking, which run at
    # every step of training.
    self.ranking = tf.function(self.ranking, jit_compile=True, autograph=False)
    self.rank_and_plan = tf.function(self.rank_and_plan, jit_compile=True,
                                     autograph=False)
    self.plan_sets = tf.function(self.plan_sets, jit_compile=True,
                                 autograph=False)
    self.plans_and_pick_places = tf.function(
        self.plans_and_pick_places, jit_compile=True, autograph=False)
    self.shortlist_sets = tf.function(self.shortlist_sets, jit_compile=True,
                                      autograph=False)

  def scores(self, steps: CategorySteps) -> tf.Tensor:
    """float64 [B, C]; higher is a better next category."""
    valid = tf.cast(steps.valid, tf.float64)
    shown = tf.cast(steps.shown > 0, tf.float64) * valid[..., None]
    recent = tf.cast(recent_steps(steps.valid, self.window), tf.float64)
    num_recent = tf.reduce_sum(recent, axis=1, keepdims=True)
    cat_seen = tf.reduce_sum(shown * recent[..., None], axis=1)
    groups_shown = tf.cast(tf.einsum("bhc,cg->bhg", tf.cast(shown, tf.float32),
                                     self._group_onehot) > 0, tf.float64)
    group_seen = tf.reduce_sum(groups_shown * recent[..., None], axis=1)
    divisor = tf.maximum(num_recent, 1.0)
    cat_seen, group_seen = cat_seen / divisor, group_seen / divisor
    engagement = steps.engagement * valid
    total = tf.einsum("bhc,bh->bc", shown, engagement)
    overall = tf.reduce_sum(engagement, axis=1)
    count = tf.reduce_sum(shown, axis=1)
    num_valid = tf.reduce_sum(valid, axis=1)
    largest = tf.reduce_max(tf.abs(engagement), axis=1)
    scale = tf.where(largest > 0, largest, 1.0)[:, None]
    prior = (overall / tf.maximum(num_valid, 1.0))[:, None] / scale
    affinity = tf.where(count > 0, total / tf.maximum(count, 1.0) / scale,
                        prior)
    affinity = tf.where(num_valid[:, None] > 0, affinity, 0.0)
    return (affinity - self._group_penalty * tf.gather(group_seen, self._groups,
                                                       axis=1)
            - self._category_penalty * cat_seen)

  def _order_keys(self, steps: CategorySteps, demote_saturated: bool
                  ) -> tf.Tensor:
    """int64 [B, C], distinct within a row; higher comes first: saturated
    categories last (if `demote_saturated`), then by score, ties (scores
    equal up to rounding in the last bits, so that how the arithmetic is
    fused cannot decide between them) by the seeded priority."""
    score = tf.cast(tf.round(self.scores(steps) * TIE_RESOLUTION), tf.int64)
    keys = (score + 2**SCORE_BITS) * self._tie_scale + self._tie_break
    if demote_saturated:
      fresh = ~saturated_categories(steps, self.rules.saturation_window)
      keys += tf.cast(fresh, tf.int64) * (2**(SCORE_BITS + 1) * self._tie_scale)
    return keys

  def ranking(self, steps: CategorySteps) -> tf.Tensor:
    """int32 [B, C]: every category id, best first (ties by priority)."""
    return _ids_in_place_order(_places(self._order_keys(steps, False)))

  def _selection(self, steps: CategorySteps
                 ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Which categories the plan takes, by comparing every pair (no sort).

    Categories are ordered by `_order_keys` (saturated ones last); the plan
    takes the first category of each group in that order (up to `size`),
    then the next ones of the rest.

    Returns:
      position int32 [B, C] (each category's place in that order),
      first_pass and second_pass bool [B, C].
    """
    keys = _computed_once(self._order_keys(steps,
                                           self.rules.exclude_saturated))
    # earlier[b, c, j]: category j comes before c; at_least: or is c.
    earlier = keys[:, None, :] > keys[:, :, None]
    at_least = keys[:, None, :] >= keys[:, :, None]
    position = tf.reduce_sum(tf.cast(earlier, tf.int32), axis=2)
    first = ~tf.reduce_any(earlier & self._same_group, axis=2)
    first_rank = tf.reduce_sum(tf.cast(at_least & first[:, None, :], tf.int32),
                               axis=2)
    first_pass = first & (first_rank <= self.size)
    left = self.size - tf.reduce_sum(tf.cast(first_pass, tf.int32), axis=1)
    rest_rank = tf.reduce_sum(tf.cast(at_least & ~first_pass[:, None, :],
                                      tf.int32), axis=2)
    second_pass = ~first_pass & (rest_rank <= left[:, None])
    return position, first_pass, second_pass

  def plan_sets(self, steps: CategorySteps) -> tf.Tensor:
    """bool [B, C]: the categories of each user's plan."""
    _, first_pass, second_pass = self._selection(steps)
    return first_pass | second_pass

  def _pick_order(self, steps: CategorySteps
                  ) -> tuple[tf.Tensor, tf.Tensor]:
    """(plan sets bool [B, C], distinct int32 [B, C] keys that order the
    categories as the plan picks them: the first pass's, then the
    second's, then the rest by position)."""
    position, first_pass, second_pass = self._selection(steps)
    num = self.num_categories
    return first_pass | second_pass, tf.where(
        first_pass, position,
        tf.where(second_pass, num + position, 2 * num + position))

  def picks(self, steps: CategorySteps) -> tf.Tensor:
    """int32 [B, C]: every category id in the order the plan picks them
    (the first pass's, then the second's, then the rest by position)."""
    return _ids_in_place_order(self.plans_and_pick_places(steps)[1])

  def plans_and_pick_places(self, steps: CategorySteps
                            ) -> tuple[tf.Tensor, tf.Tensor]:
    """(`plan_sets`, int32 [B, C] each category's place in `picks`), from
    one selection: what a planner that reorders the heuristic's picks
    (`preferred`) needs besides the heuristic's own plan."""
    plans, order = self._pick_order(steps)
    return plans, _places(-order)

  def rank_and_plan(self, steps: CategorySteps) -> tuple[tf.Tensor, tf.Tensor]:
    """(ranking int32 [B, C], plan int32 [B, size] in the order chosen:
    the first pass's categories, then the second's, each in order)."""
    return self.ranking(steps), self.picks(steps)[:, :self.size]

  def _preference_places(self, steps: CategorySteps, preference: tf.Tensor,
                         shortlist: int, pick_places: tf.Tensor | None
                         ) -> tuple[tf.Tensor, tf.Tensor]:
    """(places int32 [B, C], allowed bool [B, C]): each category's place
    by `preference` (ties in pick order) with the categories allowed (among
    the first `shortlist` picks, not saturated) ahead of the rest."""
    c = self.num_categories
    position = (self.plans_and_pick_places(steps)[1] if pick_places is None
                else pick_places)
    allowed = position < shortlist
    if self.rules.exclude_saturated:
      allowed &= ~saturated_categories(steps, self.rules.saturation_window)
    key = tf.where(allowed, preference * (c + 1) + (c - 1 - position),
                   -1 - position)
    return _places(key), allowed

  def preferred(self, steps: CategorySteps, preference: tf.Tensor,
                shortlist: int, size: int,
                pick_places: tf.Tensor | None = None
                ) -> tuple[tf.Tensor, tf.Tensor]:
    """The `size` categories of highest `preference` (int32 [B, C], ties in
    pick order) among each user's first `shortlist` picks, saturated ones
    left out: (ids int32 [B, size], best first; bool [B, size], False past
    the categories allowed). `pick_places`: `plans_and_pick_places`'s,
    if the caller has them."""
    places, allowed = self._preference_places(steps, preference, shortlist,
                                              pick_places)
    ids = _ids_in_place_order(places)[:, :size]
    return ids, tf.gather(allowed, ids, batch_dims=1)

  def preferred_sets(self, steps: CategorySteps, preference: tf.Tensor,
                     shortlist: int, size: int,
                     pick_places: tf.Tensor | None = None) -> tf.Tensor:
    """bool [B, C]: the categories of `preferred`."""
    places, allowed = self._preference_places(steps, preference, shortlist,
                                              pick_places)
    return allowed & (places < size)

  def shortlist_sets(self, steps: CategorySteps, size: int) -> tf.Tensor:
    """bool [B, C]: the first `size` categories the plan would pick, so a
    shortlist of at least `self.size` holds the heuristic's own plan
    (saturated categories come last)."""
    if not 1 <= size <= self.num_categories:
      raise ValueError(f"a shortlist of {size} categories; expected 1 to "
                       f"{self.num_categories}")
    picks = self.picks(steps)[:, :size]
    return tf.reduce_any(tf.one_hot(picks, self.num_categories,
                                    on_value=True, off_value=False), axis=1)


class HeuristicPlanner:
  """Diversify over groups not seen recently, weighted by engagement."""

  def __init__(self, catalogue: Catalogue, rules: PlanRules = PlanRules(), *,
               window: int = 5, size: int | None = None, seed: int = 0,
               group_penalty: float = 1.0,
               category_penalty: float = 1.0) -> None:
    rules.check_catalogue(catalogue)
    size = rules.max_categories if size is None else size
    if not rules.min_categories <= size <= rules.max_categories:
      raise ValueError(
          f"size={size} lies outside [{rules.min_categories}, "
          f"{rules.max_categories}] set by the rules")
    if window < 1:
      raise ValueError(f"window must be >= 1, got {window}")
    self.catalogue = catalogue
    self.rules = rules
    self.batch = BatchHeuristic(catalogue, rules, window=window, size=size,
                                seed=seed, group_penalty=group_penalty,
                                category_penalty=category_penalty)
    self._compiled = tf.function(
        lambda steps: (*self.batch.rank_and_plan(steps),
                       self.batch.scores(steps)), autograph=False)
    self._preferred = tf.function(self.batch.preferred, jit_compile=True,
                                  autograph=False)

  def _run(self, histories: Sequence[UserHistory]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ranking, plan, scores = self._compiled(
        histories_to_steps(histories, self.catalogue.num_categories))
    users = len(histories)
    return (ranking.numpy()[:users], plan.numpy()[:users],
            scores.numpy()[:users])

  def scores(self, history: UserHistory) -> np.ndarray:
    """float [num_categories]; higher is a better next category."""
    return self._run([history])[2][0]

  def ranking(self, history: UserHistory) -> list[int]:
    """Every category id, best first (ties by the seeded priority)."""
    return self._run([history])[0][0].tolist()

  def preferred(self, histories: Sequence[UserHistory],
                preference: np.ndarray, shortlist: int,
                size: int) -> list[tuple[int, ...]]:
    """Per history the `size` categories of highest `preference` (int32
    [len(histories), C]) among its first `shortlist` picks, best first
    (`BatchHeuristic.preferred`)."""
    steps = histories_to_steps(histories, self.catalogue.num_categories)
    padded = np.zeros((steps.valid.shape[0], self.catalogue.num_categories),
                      np.int32)
    padded[:len(histories)] = preference
    ids, allowed = self._preferred(steps, tf.constant(padded), shortlist, size)
    return [tuple(row[keep].tolist()) for row, keep in
            zip(ids.numpy()[:len(histories)], allowed.numpy())]

  def plan_one(self, history: UserHistory) -> tuple[int, ...]:
    return self.plan([history])[0]

  def plan(self, histories: Sequence[UserHistory],
           wait: bool = True) -> list[tuple[int, ...]]:
    """One plan (category ids, best first) per history; always immediate,
    so `wait` (part of the common interface) changes nothing."""
    del wait
    if not histories:
      return []
    return [tuple(row.tolist()) for row in self._run(histories)[1]]

  writes_lessons = False  # see Planner.writes_lessons

  def end_sessions(self, histories: Sequence[UserHistory],
                   wait: bool = True) -> None:
    """Nothing to learn from finished sessions; kept for the common interface."""
    del histories, wait

  def metrics(self) -> dict[str, float]:
    return {}

  def evaluation_view(self) -> HeuristicPlanner:
    """Itself: it keeps no state for evaluation to disturb; kept for the
    common interface (see `Planner.evaluation_view`)."""
    return self

  def close(self) -> None:
    """Nothing runs in the background; kept for the common interface."""
