"""Evaluation on fresh users: one whole session per user slot.

Counting the first N sessions to end would over-represent short sessions
(they end first); instead every slot of a fresh environment runs exactly one
session to its end, and all of them count.
"""

from __future__ import annotations

import numpy as np
from tf_agents.policies import py_policy

from lerl_recsim import environment as environment_lib
from lerl_recsim import metrics as metrics_lib


class ExposureCurve:
  """Category exposure by step index within a session (the filter bubble).

  At step t (1-based), over the evaluated sessions still running at t: the
  mean number of distinct categories shown so far and the mean share of the
  most shown category so far. Sessions that ended before t no longer count,
  so `active_sessions` says how many sessions each point averages.
  """

  def __init__(self) -> None:
    self._active: list[int] = []
    self._coverage: list[float] = []
    self._majority: list[float] = []

  def add(self, category_counts: np.ndarray, active: np.ndarray) -> None:
    """Adds one step: the sessions' counts so far [U, C] and which run."""
    counts = np.asarray(category_counts, np.float64)[np.asarray(active, bool)]
    self._active.append(len(counts))
    self._coverage.append(float((counts > 1e-6).sum()))
    self._majority.append(float(
        (counts.max(axis=1) /
         np.maximum(counts.sum(axis=1), 1e-12)).sum()))

  def to_dict(self) -> dict[str, list[float]]:
    """{step, active_sessions, category_coverage, majority_category_share}."""
    active = np.maximum(np.asarray(self._active, np.float64), 1.0)
    return {"step": list(range(1, len(self._active) + 1)),
            "active_sessions": list(self._active),
            "category_coverage": (np.asarray(self._coverage) / active).tolist(),
            "majority_category_share":
                (np.asarray(self._majority) / active).tolist()}


def evaluate_sessions(env: environment_lib.RecSimEnvironment,
                      policy: py_policy.PyPolicy,
                      exposure: ExposureCurve | None = None
                      ) -> dict[str, np.ndarray]:
  """Runs one session per slot; returns per-session metric arrays.

  The environment is reset first, so its users are fresh; sessions are
  capped by the scenario's maximum length, which bounds the loop. With
  `exposure`, every step's category exposure is added to it.
  """
  env.episode_metrics.clear()
  time_step = env.reset()
  policy_state = policy.get_initial_state(env.batch_size)
  finished = np.zeros(env.batch_size, bool)
  for _ in range(env.scenario.max_session_length + 1):
    step = policy.action(time_step, policy_state)
    policy_state = step.state
    time_step = env.step(step.action)
    if exposure is not None:
      exposure.add(time_step.observation["observation"]["category_counts"],
                   ~finished)
    finished |= time_step.is_last()
    if finished.all():
      break
  values = env.episode_metrics.values()
  _, first = np.unique(values["slot"], return_index=True)
  return {name: values[name][first] for name in metrics_lib.EPISODE_METRICS}
