"""Long-term satisfaction metrics of finished sessions.

Computed from a session's history when the user leaves: how much the user
engaged overall (cumulative reward) and how long they stayed (interaction
length), and how narrow the recommendations were (coverage, repetition,
majority-category share — DORL's MCD).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from scipy import stats

EPISODE_METRICS = ("cumulative_reward", "interaction_length", "step_reward",
                   "category_coverage", "repetition_rate",
                   "majority_category_share")


def session_metrics(history: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Per-session metrics from finished sessions' history fields.

  Args:
    history: arrays with a leading session dimension: `total_engagement`,
      `session_length`, `category_counts` [S, C] and `repeats`.

  Returns:
    One float64 array [S] per name in `EPISODE_METRICS`:
      cumulative_reward: total engagement of the session.
      interaction_length: steps before the user left (or the cap).
      step_reward: cumulative_reward / interaction_length.
      category_coverage: distinct categories recommended in the session.
      repetition_rate: share of steps after the first whose slate shared a
        category with the previous slate.
      majority_category_share: share of recommended items in the session's
        most recommended category.
  """
  length = history["session_length"].astype(np.float64)
  total = history["total_engagement"].astype(np.float64)
  counts = history["category_counts"].astype(np.float64)
  safe_length = np.maximum(length, 1.0)
  return {
      "cumulative_reward": total,
      "interaction_length": length,
      "step_reward": total / safe_length,
      "category_coverage": (counts > 1e-6).sum(axis=1).astype(np.float64),
      "repetition_rate": history["repeats"].astype(np.float64) /
                         np.maximum(length - 1.0, 1.0),
      "majority_category_share": counts.max(axis=1) /
                                 np.maximum(counts.sum(axis=1), 1e-12),
  }


def mean_and_ci95(values: np.ndarray) -> dict[str, float]:
  """Mean and half-width of a Student-t 95% confidence interval."""
  values = np.asarray(values, np.float64)
  if values.size == 0:
    return {"mean": float("nan"), "ci95": float("nan")}
  if values.size == 1:
    return {"mean": float(values[0]), "ci95": float("nan")}
  half_width = (stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) /
                np.sqrt(values.size))
  return {"mean": float(values.mean()), "ci95": float(half_width)}


def format_mean_ci(statistic: Mapping[str, float], digits: int) -> str:
  """"mean ± ci95" of a `mean_and_ci95` result, for tables."""
  return f"{statistic['mean']:.{digits}f} ± {statistic['ci95']:.{digits}f}"


class EpisodeMetricsRecorder:
  """Accumulates the metrics of every session that ends."""

  def __init__(self) -> None:
    self._chunks: list[dict[str, np.ndarray]] = []

  def record(self, metrics: Mapping[str, np.ndarray], slots: np.ndarray) -> None:
    """Adds sessions that just ended in user slots `slots`."""
    chunk = {name: np.asarray(metrics[name]) for name in EPISODE_METRICS}
    chunk["slot"] = np.asarray(slots)
    self._chunks.append(chunk)

  @property
  def num_sessions(self) -> int:
    return sum(len(chunk["cumulative_reward"]) for chunk in self._chunks)

  def values(self) -> dict[str, np.ndarray]:
    """All recorded sessions in order of ending: one array per metric, plus
    `slot`, the user slot each session ran in."""
    return {name: np.concatenate([c[name] for c in self._chunks])
            if self._chunks else np.zeros(0)
            for name in (*EPISODE_METRICS, "slot")}

  def summary(self) -> dict[str, object]:
    """{metric: {mean, ci95}} plus `num_sessions`."""
    return summarise(self.values())

  def clear(self) -> None:
    self._chunks.clear()


def summarise(values: Mapping[str, np.ndarray]) -> dict[str, object]:
  """{metric: {mean, ci95}} over sessions, plus `num_sessions`."""
  result: dict[str, object] = {name: mean_and_ci95(values[name])
                               for name in EPISODE_METRICS}
  result["num_sessions"] = int(len(values["cumulative_reward"]))
  return result
