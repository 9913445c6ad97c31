"""Situation keys in the graph: which users the LLM would be asked the same.

The prompt shows a user's situation discretised (`prompt.situation`): the
last steps' categories, clicks and engagement levels, the saturated
categories, session length and reward in buckets (unless switched off), and
the shortlist of candidates with each one's engagement level
(`candidate_view`). `situation_keys` computes, inside TensorFlow, a 64-bit
fingerprint of exactly those features, so users with equal keys get equal
prompts (given the same reflections) and the LLM's plan for one serves them
all; the TensorFlow planned environment keeps the LLM's plans in a hash
table under these keys. The Python prompt takes its shortlist and levels
from the same `candidate_view` (`candidates_for`), so both agree by
construction.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from lerl_recsim.planner.heuristic import (BatchHeuristic, CategorySteps,
                                           histories_to_steps, recent_steps,
                                           saturated_categories)
from lerl_recsim.planner.history import UserHistory
from lerl_recsim.planner.prompt import Candidates, PromptConfig
from lerl_recsim.planner.validation import PlanRules


def candidate_view(heuristic: BatchHeuristic, steps: CategorySteps,
                   config: PromptConfig, pick_places: tf.Tensor | None = None
                   ) -> tuple[tf.Tensor, tf.Tensor]:
  """(shortlist bool [B, C], levels int64 [B, C]) as the prompt lists them.

  The shortlist is the heuristic's first `config.shortlist_size` picks (all
  False without a shortlist), read off `pick_places`
  (`BatchHeuristic.plans_and_pick_places`) when the caller has them, so
  that the heuristic's selection runs once per step. A category's level is
  0 when no valid step showed it, else 1 + the level of its mean engagement
  over the steps that did (`config.candidate_edges`).
  """
  batch = tf.shape(steps.valid)[0]
  if config.shortlist_size is None:
    empty = tf.zeros([batch, heuristic.num_categories], tf.bool)
    return empty, tf.zeros_like(empty, tf.int64)
  shortlist = (heuristic.shortlist_sets(steps, config.shortlist_size)
               if pick_places is None else pick_places < config.shortlist_size)
  valid = tf.cast(steps.valid, tf.float64)
  shown = tf.cast(steps.shown > 0, tf.float64) * valid[..., None]
  count = tf.reduce_sum(shown, axis=1)
  total = tf.einsum("bhc,bh->bc", shown, steps.engagement * valid)
  mean = total / tf.maximum(count, 1.0)
  edges = tf.constant(config.candidate_edges, tf.float64)
  level = 1 + tf.reduce_sum(tf.cast(mean[..., None] >= edges, tf.int64), -1)
  return shortlist, tf.where(count > 0, level, tf.zeros_like(level))


def candidates_for(heuristic: BatchHeuristic,
                   histories: Sequence[UserHistory],
                   config: PromptConfig) -> list[Candidates | None]:
  """Per history the prompt's `Candidates` (None without a shortlist), from
  one batched `candidate_view`."""
  if config.shortlist_size is None or not histories:
    return [None] * len(histories)
  shortlist, levels = candidate_view(
      heuristic, histories_to_steps(histories, heuristic.num_categories),
      config)
  shortlist, levels = shortlist.numpy(), levels.numpy()
  return [Candidates(tuple(np.flatnonzero(shortlist[b]).tolist()),
                     tuple(levels[b].tolist()))
          for b in range(len(histories))]


def situation_keys(steps: CategorySteps, session_length: tf.Tensor,
                   cumulative_reward: tf.Tensor, config: PromptConfig,
                   rules: PlanRules, heuristic: BatchHeuristic,
                   pick_places: tf.Tensor | None = None) -> tf.Tensor:
  """int64 [B]: equal keys for users whose prompt variables are equal.

  Args: as `situation_view`.
  """
  return keys_of(situation_view(steps, session_length, cumulative_reward,
                                config, rules, heuristic, pick_places))


def situation_view(steps: CategorySteps, session_length: tf.Tensor,
                   cumulative_reward: tf.Tensor, config: PromptConfig,
                   rules: PlanRules, heuristic: BatchHeuristic,
                   pick_places: tf.Tensor | None = None) -> tf.Tensor:
  """int64 [B, F]: `situation_features` with the prompt's candidates; XLA
  compiles it (inside a caller's compiled function too).

  Args: as `situation_features`; `heuristic` is the planner's fallback's
  (it chooses the shortlist), `pick_places` as in `candidate_view`.
  """
  shortlist, levels = candidate_view(heuristic, steps, config, pick_places)
  return situation_features(steps, session_length, cumulative_reward,
                            shortlist, levels, config, rules)


def keys_of(features: tf.Tensor) -> tf.Tensor:
  """int64 [B]: a 64-bit fingerprint of each row of `features` (outside
  XLA, which has no fingerprint op)."""
  return tf.bitcast(tf.fingerprint(features), tf.int64)  # [B, 8] bytes -> [B]


@tf.function(jit_compile=True, autograph=False)
def situation_features(steps: CategorySteps, session_length: tf.Tensor,
                       cumulative_reward: tf.Tensor, shortlist: tf.Tensor,
                       levels: tf.Tensor, config: PromptConfig,
                       rules: PlanRules) -> tf.Tensor:
  """int64 [B, F]: what the prompt shows of each user's situation (XLA
  fuses its many small ops; the fingerprint is outside XLA).

  Args:
    steps: the users' recent steps.
    session_length: int [B], steps so far.
    cumulative_reward: float64 [B], reward so far.
    shortlist, levels: the candidates (`candidate_view`).
    config: the prompt's discretisation.
    rules: the plan rules (saturation window).
  """
  length = steps.shown.shape[1]
  window = min(config.history_window, length)
  recent = recent_steps(steps.valid, window)[:, length - window:]
  on = tf.cast(recent, tf.int64)
  counts = tf.cast(tf.round(steps.shown[:, length - window:]), tf.int64)
  edges = tf.constant(config.engagement_edges, tf.float64)
  level = tf.reduce_sum(tf.cast(
      steps.engagement[:, length - window:, None] >= edges, tf.int64), -1)
  listed = tf.cast(shortlist, tf.int64)
  features = [
      tf.reshape(counts * on[..., None], [tf.shape(on)[0], -1]),
      on, tf.cast(steps.clicked[:, length - window:], tf.int64) * on,
      level * on,
      tf.cast(saturated_categories(steps, rules.saturation_window), tf.int64),
      listed, levels * listed]
  if config.show_totals:
    reward = tf.cast(tf.round(cumulative_reward / config.reward_step),
                     tf.int64)
    features += [
        (tf.cast(session_length, tf.int64) // config.length_step)[:, None],
        reward[:, None]]
  return tf.concat(features, axis=1)
