"""A scenario's RecSim NG network, stepped in TensorFlow for a batch of users.

The network value lives in `tf.Variable`s, so that a compiled step takes and
returns only a few small tensors: passing the whole nested state in and out
of a `tf.function` costs more Python time than the step itself. Both the
Python environment (`environment.RecSimEnvironment`) and the TensorFlow one
(`tf_environment.TFRecSimEnvironment`) step the same `CompiledSimulator`, so
for a seed and actions they give the same trajectories.
"""

from __future__ import annotations

from typing import Any, Mapping

import tensorflow as tf
from recsim_ng.core import value
from tf_agents.trajectories import time_step as ts

from lerl_recsim.scenarios import interest_evolution, seeding
from lerl_recsim.scenarios import session_history, story

Value = value.Value
NestedTensors = dict[str, dict[str, tf.Tensor]]


class CompiledSimulator:
  """Per-user sessions of a scenario: reset, step and the hidden state.

  Every random draw is stateless, seeded by the `seed` tensor passed to
  `reset`/`step` (the environments pass [environment seed, step count]).
  """

  def __init__(self, scenario: interest_evolution.Scenario):
    self.scenario = scenario
    self._network = scenario.network
    self._state: dict[str, dict[str, tf.Variable]] | None = None

  @property
  def built(self) -> bool:
    return self._state is not None

  def build(self, seed: tf.Tensor) -> None:
    """Creates the state variables (eagerly, outside any `tf.function`)."""
    self._state = tf.nest.map_structure(tf.Variable, self._initial(seed))

  @staticmethod
  def _pack(network_value: Mapping[str, Value]) -> NestedTensors:
    return {name: dict(v.as_dict) for name, v in network_value.items()}

  def _read_state(self) -> dict[str, Value]:
    return {name: Value(**{field: variable.read_value()
                           for field, variable in fields.items()})
            for name, fields in self._state.items()}

  def _assign_state(self, packed: NestedTensors) -> None:
    tf.nest.map_structure(lambda variable, new: variable.assign(new),
                          self._state, packed)

  def _initial(self, seed: tf.Tensor) -> NestedTensors:
    with seeding.stateless_sampling(seed):
      return self._pack(self._network.initial_step())

  def reset(self, seed: tf.Tensor) -> dict[str, tf.Tensor]:
    """New users in every slot; returns what the recommender observes."""
    self._assign_state(self._initial(seed))
    return self.observed()

  def observed(self) -> dict[str, tf.Tensor]:
    """The observable session history of every slot."""
    history = self._state[story.HISTORY]
    return {name: history[name].read_value()
            for name in session_history.OBSERVED_FIELDS}

  def session_totals(self) -> dict[str, tf.Tensor]:
    """What `metrics.session_metrics` needs of each slot's session."""
    history = self._state[story.HISTORY]
    return {name: history[name].read_value()
            for name in session_history.SESSION_TOTALS}

  def step(self, actions: tf.Tensor, reset: tf.Tensor,
           seed: tf.Tensor) -> dict[str, Any]:
    """One step of every slot; slots in `reset` get a new user instead.

    Args:
      actions: int32 [U, k] slates.
      reset: bool [U], slots whose session ended at the previous step.
      seed: int64 [2].

    Returns:
      step_type, reward, discount [U]; observation (the observed history);
      session (its totals, for the metrics of sessions that end here).
    """
    previous = self._read_state()
    previous[story.SLATE_REQUEST] = Value(items=actions)
    # One seed: the step's draws, then the fresh users' (in that order).
    with seeding.stateless_sampling(seed):
      stepped = self._network.step(previous)
      fresh = self._network.initial_step()
    merged = story.with_arrivals(stepped, fresh, reset)
    self._assign_state(self._pack(merged))
    exit_state = merged[story.EXIT_STATE]
    ended = story.ended(exit_state)
    step_type = tf.where(
        reset, ts.StepType.FIRST,
        tf.where(ended, ts.StepType.LAST, ts.StepType.MID))
    history = merged[story.HISTORY]
    return {
        "step_type": tf.cast(step_type, tf.int32),
        "reward": merged[story.USER_RESPONSE].get("engagement"),
        "discount": 1.0 - exit_state.get("left"),
        "observation": {name: history.get(name)
                        for name in session_history.OBSERVED_FIELDS},
        "session": {name: history.get(name)
                    for name in session_history.SESSION_TOTALS},
    }

  def checkpoint_state(self) -> dict[str, dict[str, tf.Variable]]:
    """The state variables, for a checkpoint: a resumed run continues with
    the same users where they were."""
    return self._state

  def hidden_state(self) -> NestedTensors:
    """A copy of every user's whole state, hidden parts included (oracles
    only: what `lookahead.Lookahead` simulates futures from)."""
    return self._pack(self._read_state())

  def load_state(self, state: NestedTensors) -> None:
    """Sets the state (e.g. users copied from another simulator); shapes
    must match this simulator's."""
    self._assign_state(state)

  def expected_engagement(self) -> tf.Tensor:
    """float32 [U, N] for the current users; reads the hidden state (oracles
    only, never a deployable policy)."""
    state = self._read_state()
    return self.scenario.user.expected_engagement(
        state[story.USER_STATE], state[story.CORPUS])
