"""Hand-written policies that check a scenario is meaningful.

Not learning agents: they show whether the scenario rewards what it should
(the best-category policy earns per-step reward but loses users; a diversifying one
keeps them; the oracle bounds what immediate engagement can give).
Each scores every item and recommends the best allowed ones.
"""

from __future__ import annotations

import abc
from typing import Any, Optional

import numpy as np
import tensorflow as tf
from tf_agents.policies import py_policy
from tf_agents.trajectories import policy_step
from tf_agents.typing import types

from lerl_recsim import environment as environment_lib
from lerl_recsim import lookahead, slates


class ScoringPolicy(py_policy.PyPolicy, metaclass=abc.ABCMeta):
  """Recommends the top-k allowed items under `_scores`, ties broken randomly."""

  def __init__(self, env: environment_lib.RecSimEnvironment, seed: int = 0):
    super().__init__(
        env.time_step_spec(), env.action_spec(),
        observation_and_action_constraint_splitter=environment_lib.splitter)
    self._slate_size = env.scenario.slate_size
    categories = env.scenario.items.categories
    self._item_shares = categories / categories.sum(axis=1, keepdims=True)
    self._rng = np.random.default_rng(seed)

  @abc.abstractmethod
  def _scores(self, observation: dict[str, np.ndarray],
              mask: np.ndarray) -> np.ndarray:
    """float [U, N] item scores for the current users; items outside the
    mask [U, N] are never served, whatever their score."""

  def _action(self, time_step: Any, policy_state: types.NestedArray,
              seed: Optional[types.Seed] = None) -> policy_step.PolicyStep:
    del seed
    observation, mask = environment_lib.splitter(time_step.observation)
    scores = self._scores(observation, mask)
    tie_break = 1e-6 * self._rng.random(scores.shape)
    slate = slates.masked_top_k(scores + tie_break, mask, self._slate_size)
    action = slate[:, 0] if self._slate_size == 1 else slate
    return policy_step.PolicyStep(action, policy_state, ())


class RandomPolicy(ScoringPolicy):
  """Uniformly random allowed items."""

  def _scores(self, observation, mask):
    return self._rng.random((len(observation["session_length"]),
                             self._item_shares.shape[0]))


def mean_category_engagement(observation: dict[str, np.ndarray],
                             optimism: float) -> np.ndarray:
  """Engagement per item shown in each category this session, [U, C]; a
  category not yet shown counts as `optimism` (one pseudo-observation)."""
  return ((observation["category_engagement"] + optimism) /
          (observation["category_counts"] + 1.0))


class BestCategoryPolicy(ScoringPolicy):
  """Serves the category in which the user has engaged most per item this
  session (a random item of it). Categories not yet tried count as promising,
  so it first searches, then sticks to the best one: the filter-bubble
  policy."""

  def __init__(self, env: environment_lib.RecSimEnvironment, seed: int = 0,
               optimism: float = 0.5):
    super().__init__(env, seed)
    self._optimism = optimism

  def _scores(self, observation, mask):
    return (mean_category_engagement(observation, self._optimism) @
            self._item_shares.T)


class DiversifyingPolicy(ScoringPolicy):
  """The best-category policy's preference, minus a penalty for
  categories and semantic groups shown in the last `recent_steps` steps."""

  def __init__(self, env: environment_lib.RecSimEnvironment, seed: int = 0,
               recent_steps: int = 5, optimism: float = 0.5,
               category_penalty: float = 1.0, group_penalty: float = 0.3):
    super().__init__(env, seed)
    self._recent_steps = recent_steps
    self._optimism = optimism
    self._category_penalty = category_penalty
    self._group_penalty = group_penalty
    catalogue = env.scenario.catalogue
    self._same_group = catalogue.same_group_matrix()
    self._item_categories = env.scenario.items.categories

  def _scores(self, observation, mask):
    mean_engagement = mean_category_engagement(observation, self._optimism)
    recent = observation["item_history"][:, -self._recent_steps:].reshape(
        len(mean_engagement), -1)
    shown = np.where(recent[..., None] >= 0,
                     self._item_categories[np.maximum(recent, 0)], 0.0)
    recent_categories = shown.sum(axis=1)  # [U, C]
    recent_groups = recent_categories @ self._same_group
    category_score = (mean_engagement -
                      self._category_penalty * recent_categories -
                      self._group_penalty * recent_groups)
    return category_score @ self._item_shares.T


class OraclePolicy(ScoringPolicy):
  """Reads the hidden user state and serves the items with the highest
  expected immediate engagement after satiation. Not deployable; an upper
  reference for one-step engagement, not for long-term satisfaction."""

  def __init__(self, env: environment_lib.RecSimEnvironment, seed: int = 0):
    super().__init__(env, seed)
    self._env = env

  def _scores(self, observation, mask):
    return self._env.expected_engagement()


class PlanningOraclePolicy(ScoringPolicy):
  """Reads the hidden state and searches ahead in the true simulator
  (`lerl_recsim.lookahead`): the candidates are the best allowed item of
  the most engaging categories and the best fresh allowed item of the most
  engaging ones (`SearchSettings.candidates`), each valued by simulated
  futures that include the chance that the user leaves; the best candidate
  is served. Not deployable: the ceiling tables read long-term satisfaction
  against.
  """

  def __init__(self, env: environment_lib.RecSimEnvironment, seed: int = 0,
               settings: lookahead.SearchSettings = lookahead.SearchSettings()):
    super().__init__(env, seed)
    self._env = env
    self._in_category = env.scenario.items.categories.T > 0  # [C, N]
    self._categories = tf.constant(env.scenario.items.categories, tf.float32)
    self._fresh_window = settings.fresh_window
    self._searched = min(settings.candidates or 2 * len(self._in_category),
                         2 * len(self._in_category))
    self._lookahead = lookahead.Lookahead(env.scenario, self._searched,
                                          settings)

  def candidates(self, observation: dict[str, np.ndarray], mask: np.ndarray,
                 expected: np.ndarray) -> np.ndarray:
    """int32 [U, searched] item ids, -1 where a user has fewer distinct
    candidates: the categories' best allowed items and best fresh allowed
    items, alternately, each list by expected engagement, first come
    first kept."""
    fresh = lookahead.fresh_items(observation["item_history"],
                                  self._categories, self._fresh_window).numpy()
    ranked = []
    for allowed in (mask, mask & fresh):
      best = np.where(allowed[:, None, :] & self._in_category[None],
                      expected[:, None, :], -np.inf)  # [U, C, N]
      top = best.max(axis=2)
      order = np.argsort(-top, axis=1, kind="stable")
      items = np.take_along_axis(best.argmax(axis=2), order, axis=1)
      ranked.append(np.where(np.isfinite(np.take_along_axis(top, order, 1)),
                             items, -1))
    alternating = np.stack(ranked, axis=2).reshape(len(expected), -1)
    chosen = np.full((len(expected), self._searched), -1, np.int32)
    for user, items in enumerate(alternating):
      kept = list(dict.fromkeys(int(i) for i in items if i >= 0))
      chosen[user, :min(len(kept), self._searched)] = kept[:self._searched]
    return chosen

  def _scores(self, observation, mask):
    expected = self._env.expected_engagement()  # [U, N]
    candidates = self.candidates(observation, mask, expected)
    searched = np.maximum(candidates, 0)
    values = self._env.lookahead_values(self._lookahead, searched)
    values = np.where(candidates >= 0, values, -np.inf)
    scores = np.full_like(expected, -1e9)
    rows = np.arange(len(scores))[:, None]
    # Ascending, so a padding slot (-inf, item 0) never hides item 0's value.
    order = np.argsort(values, axis=1)
    scores[rows, searched[rows, order]] = np.maximum(
        values[rows, order], -1e9)
    return scores


SCRIPTED_POLICIES = {
    "random": RandomPolicy,
    "best_category": BestCategoryPolicy,
    "diversifying": DiversifyingPolicy,
    "oracle": OraclePolicy,
    "planning_oracle": PlanningOraclePolicy,
}
