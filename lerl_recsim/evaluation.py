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


def evaluate_sessions(env: environment_lib.RecSimEnvironment,
                      policy: py_policy.PyPolicy) -> dict[str, np.ndarray]:
  """Runs one session per slot; returns per-session metric arrays.

  The environment is reset first, so its users are fresh; sessions are
  capped by the scenario's maximum length, which bounds the loop.
  """
  env.episode_metrics.clear()
  time_step = env.reset()
  policy_state = policy.get_initial_state(env.batch_size)
  finished = np.zeros(env.batch_size, bool)
  for _ in range(env.scenario.max_session_length + 1):
    step = policy.action(time_step, policy_state)
    policy_state = step.state
    time_step = env.step(step.action)
    finished |= time_step.is_last()
    if finished.all():
      break
  values = env.episode_metrics.values()
  _, first = np.unique(values["slot"], return_index=True)
  return {name: values[name][first] for name in metrics_lib.EPISODE_METRICS}
