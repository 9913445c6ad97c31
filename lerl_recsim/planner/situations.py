"""Situation keys in the graph: which users the LLM would be asked the same.

The prompt shows a user's situation discretised (`prompt.situation`): the
last steps' categories, clicks and engagement levels, the saturated
categories, and session length and reward in buckets. `situation_keys`
computes, inside TensorFlow, a 64-bit fingerprint of exactly those features,
so users with equal keys get equal prompts (given the same reflections) and
the LLM's plan for one serves them all; the TensorFlow planned environment
keeps the LLM's plans in a hash table under these keys.
"""

from __future__ import annotations

import tensorflow as tf

from lerl_recsim.planner.heuristic import (CategorySteps, recent_steps,
                                           saturated_categories)
from lerl_recsim.planner.prompt import PromptConfig
from lerl_recsim.planner.validation import PlanRules


def situation_keys(steps: CategorySteps, session_length: tf.Tensor,
                   cumulative_reward: tf.Tensor, config: PromptConfig,
                   rules: PlanRules) -> tf.Tensor:
  """int64 [B]: equal keys for users whose prompt variables are equal.

  Args: as `situation_features`.
  """
  features = situation_features(steps, session_length, cumulative_reward,
                                config, rules)
  return tf.bitcast(tf.fingerprint(features), tf.int64)  # [B, 8] bytes -> [B]


@tf.function(jit_compile=True, autograph=False)
def situation_features(steps: CategorySteps, session_length: tf.Tensor,
                       cumulative_reward: tf.Tensor, config: PromptConfig,
                       rules: PlanRules) -> tf.Tensor:
  """int64 [B, F]: what the prompt shows of each user's situation (XLA
  fuses its many small ops; the fingerprint is outside XLA).

  Args:
    steps: the users' recent steps.
    session_length: int [B], steps so far.
    cumulative_reward: float64 [B], reward so far.
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
  reward = tf.cast(tf.round(cumulative_reward / config.reward_step), tf.int64)
  return tf.concat([
      tf.reshape(counts * on[..., None], [tf.shape(on)[0], -1]),
      on, tf.cast(steps.clicked[:, length - window:], tf.int64) * on,
      level * on,
      tf.cast(saturated_categories(steps, rules.saturation_window), tf.int64),
      (tf.cast(session_length, tf.int64) // config.length_step)[:, None],
      reward[:, None]], axis=1)
