"""A RecSim NG scenario served as a batched TF-Agents `PyEnvironment`.

One batch entry per simulated user slot. Each slot runs its own sessions:
when its user leaves, the slot returns a LAST step, and on the next step a
new user arrives (FIRST) while the other slots carry on. The whole step —
user response, state updates, exit rules, resets — is one compiled
`tf.function` over all users.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf
from recsim_ng.core import value
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.environments import py_environment
from tf_agents.typing import types

from lerl_recsim import metrics as metrics_lib
from lerl_recsim.scenarios import interest_evolution, registry, seeding
from lerl_recsim.scenarios import session_history, story

Value = value.Value
NestedTensors = dict[str, dict[str, tf.Tensor]]


def splitter(observation: Mapping[str, Any]) -> tuple[Any, Any]:
  """The `observation_and_action_constraint_splitter` of these environments."""
  return observation["observation"], observation["mask"]


def scenario_names() -> list[str]:
  return sorted(registry.SCENARIOS)


def check_actions(actions: np.ndarray, mask: np.ndarray, active: np.ndarray,
                  num_items: int, slate_size: int) -> np.ndarray:
  """Validates a batch of actions; returns them as int32 [U, k].

  Args:
    actions: [U] (slate size 1) or [U, k] item indices.
    mask: bool [U, N], the items each slot may recommend.
    active: bool [U], slots whose action is used (resetting slots are not).
    num_items: N.
    slate_size: k.

  Raises:
    TypeError / ValueError naming the slot and the item.
  """
  actions = np.asarray(actions)
  num_users = mask.shape[0]
  expected = (num_users,) if slate_size == 1 else (num_users, slate_size)
  if not np.issubdtype(actions.dtype, np.integer):
    raise TypeError(
        f"actions must be integer item indices, got dtype {actions.dtype}")
  if actions.shape != expected:
    raise ValueError(
        f"actions have shape {actions.shape}; expected {expected} "
        f"({num_users} user slots, slate size {slate_size})")
  slates = actions.reshape(num_users, slate_size)
  checked = slates[active]
  slots = np.flatnonzero(active)
  bad = (checked < 0) | (checked >= num_items)
  if bad.any():
    row, col = np.argwhere(bad)[0]
    raise ValueError(
        f"slot {slots[row]} recommends item {checked[row, col]}, outside "
        f"[0, {num_items - 1}]")
  allowed = np.take_along_axis(mask[slots], checked, axis=1)
  if not allowed.all():
    row, col = np.argwhere(~allowed)[0]
    raise ValueError(
        f"slot {slots[row]} recommends item {checked[row, col]}, which its "
        "mask excludes")
  if slate_size > 1:
    ordered = np.sort(checked, axis=1)
    duplicated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    if duplicated.any():
      row = np.flatnonzero(duplicated)[0]
      raise ValueError(
          f"slot {slots[row]} recommends a slate with repeated items "
          f"{checked[row].tolist()}; a slate needs {slate_size} distinct items")
  return slates.astype(np.int32)


class RecSimEnvironment(py_environment.PyEnvironment):
  """Batched per-user-episode environment over a scenario's network.

  Observation: {'observation': the session history a recommender may see
  (see `session_history.OBSERVED_FIELDS`), 'mask': bool [N], all True here;
  wrappers such as the planner narrow it}. Action: an item index, or k
  distinct item indices when the slate size k > 1.
  """

  def __init__(self, scenario: interest_evolution.Scenario, seed: int):
    super().__init__(handle_auto_reset=False)
    self._scenario = scenario
    self._network = scenario.network
    self._seed = int(seed)
    self._num_users = scenario.num_users
    self._num_items = scenario.items.num_items
    self._steps_taken = 0
    self._state: dict[str, dict[str, tf.Variable]] | None = None
    self._last = np.zeros(self._num_users, bool)
    self._mask = np.ones((self._num_users, self._num_items), bool)
    self._mask.setflags(write=False)
    self._metrics = metrics_lib.EpisodeMetricsRecorder()
    self._build_specs()
    self._reset_fn = tf.function(self._reset_graph, autograph=False)
    self._step_fn: Any = None  # traced once the state variables exist
    self._oracle_fn = tf.function(self._expected_engagement, autograph=False)

  # --- specs -----------------------------------------------------------

  def _build_specs(self) -> None:
    s = self._scenario
    h, k, c, n = (s.history_length, s.slate_size, s.catalogue.num_categories,
                  self._num_items)
    bounded = array_spec.BoundedArraySpec
    self._observation_spec = {
        "observation": {
            "item_history": bounded((h, k), np.int32, -1, n - 1,
                                    name="item_history"),
            "click_history": bounded((h, k), np.float32, 0.0, 1.0,
                                     name="click_history"),
            "response_history": bounded((h, k), np.float32, 0.0, 1.0,
                                        name="response_history"),
            "category_counts": bounded((c,), np.float32, 0.0,
                                       float(s.max_session_length * k),
                                       name="category_counts"),
            "category_engagement": bounded(
                (c,), np.float32, 0.0, float(s.max_session_length),
                name="category_engagement"),
            "session_length": bounded((), np.int32, 0, s.max_session_length,
                                      name="session_length"),
            "mean_engagement": bounded((), np.float32, 0.0, 1.0,
                                       name="mean_engagement"),
        },
        "mask": array_spec.ArraySpec((n,), np.bool_, name="mask"),
    }
    shape = () if k == 1 else (k,)
    self._action_spec = bounded(shape, np.int32, 0, n - 1, name="item")
    self._reward_spec = array_spec.ArraySpec((), np.float32, name="reward")

  def observation_spec(self) -> types.NestedArraySpec:
    return self._observation_spec

  def action_spec(self) -> types.NestedArraySpec:
    return self._action_spec

  def reward_spec(self) -> types.NestedArraySpec:
    return self._reward_spec

  @property
  def batched(self) -> bool:
    return True

  @property
  def batch_size(self) -> int:
    return self._num_users

  # --- what callers may read ----------------------------------------------

  @property
  def scenario(self) -> interest_evolution.Scenario:
    return self._scenario

  @property
  def config(self) -> Mapping[str, Any]:
    """The resolved scenario configuration, for saving beside results."""
    return self._scenario.config

  @property
  def episode_metrics(self) -> metrics_lib.EpisodeMetricsRecorder:
    """Metrics of every session that has ended since the last clear."""
    return self._metrics

  def expected_engagement(self) -> np.ndarray:
    """float32 [U, N]: each item's expected engagement for each current user.

    Reads the hidden user state; for oracle references only, never a
    deployable policy.
    """
    if self._state is None:
      self.reset()
    return self._oracle_fn().numpy()

  # --- compiled graph --------------------------------------------------------
  # The network value lives in tf.Variables so that a compiled step takes and
  # returns only a few small tensors: passing the whole nested state in and
  # out of a tf.function costs more Python time than the step itself.

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

  def _reset_graph(self, seed: tf.Tensor) -> dict[str, tf.Tensor]:
    self._assign_state(self._initial(seed))
    return self._observed()

  def _observed(self) -> dict[str, tf.Tensor]:
    history = self._state[story.HISTORY]
    return {name: history[name].read_value()
            for name in session_history.OBSERVED_FIELDS}

  def _step_graph(self, actions: tf.Tensor, reset: tf.Tensor,
                  seed: tf.Tensor) -> dict[str, Any]:
    previous = self._read_state()
    previous[story.SLATE_REQUEST] = Value(items=actions)
    with seeding.stateless_sampling(seed):
      stepped = self._network.step(previous)
      fresh = self._network.initial_step()

    def select(new: tf.Tensor, old: tf.Tensor) -> tf.Tensor:
      condition = tf.reshape(reset, [-1] + [1] * (len(old.shape) - 1))
      return tf.where(condition, new, old)

    merged = dict(stepped)
    for name in story.PER_USER_VARIABLES:
      merged[name] = Value(**tf.nest.map_structure(
          select, dict(fresh[name].as_dict), dict(stepped[name].as_dict)))
    self._assign_state(self._pack(merged))
    exit_state = merged[story.EXIT_STATE]
    ended = (exit_state.get("left") + exit_state.get("truncated")) > 0.0
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
        # What the metrics of a session that ends on this step need.
        "session": {name: history.get(name)
                    for name in session_history.SESSION_TOTALS},
    }

  def _expected_engagement(self) -> tf.Tensor:
    state = self._read_state()
    return self._scenario.user.expected_engagement(
        state[story.USER_STATE], state[story.CORPUS])

  # --- PyEnvironment -----------------------------------------------------

  def _next_seed(self) -> tf.Tensor:
    self._steps_taken += 1
    return tf.constant([self._seed, self._steps_taken], tf.int64)

  def _time_step(self, step_type: np.ndarray, reward: np.ndarray,
                 discount: np.ndarray,
                 observed: Mapping[str, tf.Tensor]) -> ts.TimeStep:
    return ts.TimeStep(
        step_type=step_type, reward=reward, discount=discount,
        observation={"observation": {name: tensor.numpy()
                                     for name, tensor in observed.items()},
                     "mask": self._mask})

  def _reset(self) -> ts.TimeStep:
    self._steps_taken = 0
    seed = self._next_seed()
    if self._state is None:
      self._state = tf.nest.map_structure(tf.Variable, self._initial(seed))
      # A concrete function of flat tensors: calling it skips matching the
      # arguments to a trace, which costs as much as the step's ops.
      self._step_fn = tf.function(self._step_graph, autograph=False
                                  ).get_concrete_function(
          tf.TensorSpec([self._num_users, self._scenario.slate_size], tf.int32),
          tf.TensorSpec([self._num_users], tf.bool),
          tf.TensorSpec([2], tf.int64))
    observed = self._reset_fn(seed)
    self._last = np.zeros(self._num_users, bool)
    return self._time_step(
        np.full(self._num_users, ts.StepType.FIRST, np.int32),
        np.zeros(self._num_users, np.float32),
        np.ones(self._num_users, np.float32), observed)

  def _step(self, action: types.NestedArray) -> ts.TimeStep:
    if self._state is None:
      return self.reset()
    slates = check_actions(action, self._mask, ~self._last, self._num_items,
                           self._scenario.slate_size)
    outputs = self._step_fn(tf.constant(slates), tf.constant(self._last),
                            self._next_seed())
    step_type = outputs["step_type"].numpy()
    self._last = step_type == ts.StepType.LAST
    if self._last.any():
      self._metrics.record(
          metrics_lib.session_metrics(
              {name: tensor.numpy()[self._last]
               for name, tensor in outputs["session"].items()}),
          slots=np.flatnonzero(self._last))
    return self._time_step(step_type, outputs["reward"].numpy(),
                           outputs["discount"].numpy(), outputs["observation"])


def make_env(scenario: str = "interest_evolution", num_users: int = 64,
             seed: int = 0, **overrides: Any) -> RecSimEnvironment:
  """Builds a batched TF-Agents environment for a registered scenario.

  Args:
    scenario: registered scenario name (`scenario_names()`).
    num_users: simultaneous user slots, the environment's batch size.
    seed: seeds the corpus and every random draw of the dynamics; the same
      seed and actions give the same trajectories.
    **overrides: scenario parameters, e.g. `num_items=1000`, `slate_size=3`,
      `exit_rule="temper"`, `exit_params={"initial_temper": 10}`,
      `satiation_decay=0.9`; see the README for the full list.
  """
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"seed must be an int, got {seed!r}")
  built = registry.build_scenario(scenario, num_users=num_users, seed=int(seed),
                                  **overrides)
  return RecSimEnvironment(built, seed=int(seed))
