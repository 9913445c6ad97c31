"""A RecSim NG scenario served as a batched TF-Agents `PyEnvironment`.

One batch entry per simulated user slot. Each slot runs its own sessions:
when its user leaves, the slot returns a LAST step, and on the next step a
new user arrives (FIRST) while the other slots carry on. The whole step —
user response, state updates, exit rules, resets — is one compiled
`tf.function` over all users (`simulator.CompiledSimulator`, which the
TensorFlow-native environment in `tf_environment` steps too).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.environments import py_environment
from tf_agents.typing import types

from lerl_recsim import lookahead as lookahead_lib
from lerl_recsim import metrics as metrics_lib
from lerl_recsim import simulator
from lerl_recsim.scenarios import interest_evolution, registry

# Added to the environment's seed for the draws of simulated futures, so
# that a search never sees the draws of the real next steps.
SEARCH_SEED_OFFSET = 1_000_003


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


def environment_specs(scenario: interest_evolution.Scenario
                      ) -> tuple[types.NestedArraySpec, types.ArraySpec,
                                 types.ArraySpec]:
  """(observation, action, reward) array specs of a scenario's environments."""
  h, k, c, n = (scenario.history_length, scenario.slate_size,
                scenario.catalogue.num_categories, scenario.items.num_items)
  bounded = array_spec.BoundedArraySpec
  observation = {
      "observation": {
          "item_history": bounded((h, k), np.int32, -1, n - 1,
                                  name="item_history"),
          "click_history": bounded((h, k), np.float32, 0.0, 1.0,
                                   name="click_history"),
          "response_history": bounded((h, k), np.float32, 0.0, 1.0,
                                      name="response_history"),
          "category_counts": bounded((c,), np.float32, 0.0,
                                     float(scenario.max_session_length * k),
                                     name="category_counts"),
          "category_engagement": bounded(
              (c,), np.float32, 0.0, float(scenario.max_session_length),
              name="category_engagement"),
          "session_length": bounded((), np.int32, 0,
                                    scenario.max_session_length,
                                    name="session_length"),
          "mean_engagement": bounded((), np.float32, 0.0, 1.0,
                                     name="mean_engagement"),
      },
      "mask": array_spec.ArraySpec((n,), np.bool_, name="mask"),
  }
  shape = () if k == 1 else (k,)
  return (observation, bounded(shape, np.int32, 0, n - 1, name="item"),
          array_spec.ArraySpec((), np.float32, name="reward"))


class ScenarioProperties:
  """What callers may read of a scenario environment, Python or TensorFlow."""

  _scenario: interest_evolution.Scenario
  _metrics: metrics_lib.EpisodeMetricsRecorder

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


class RecSimEnvironment(ScenarioProperties, py_environment.PyEnvironment):
  """Batched per-user-episode environment over a scenario's network.

  Observation: {'observation': the session history a recommender may see
  (see `session_history.OBSERVED_FIELDS`), 'mask': bool [N], all True here;
  wrappers such as the planner narrow it}. Action: an item index, or k
  distinct item indices when the slate size k > 1.
  """

  def __init__(self, scenario: interest_evolution.Scenario, seed: int):
    super().__init__(handle_auto_reset=False)
    self._scenario = scenario
    self._simulator = simulator.CompiledSimulator(scenario)
    self._seed = int(seed)
    self._num_users = scenario.num_users
    self._num_items = scenario.items.num_items
    self._steps_taken = 0
    self._last = np.zeros(self._num_users, bool)
    self._mask = np.ones((self._num_users, self._num_items), bool)
    self._mask.setflags(write=False)
    self._metrics = metrics_lib.EpisodeMetricsRecorder()
    (self._observation_spec, self._action_spec,
     self._reward_spec) = environment_specs(scenario)
    self._reset_fn = tf.function(self._simulator.reset, autograph=False)
    self._step_fn: Any = None  # traced once the state variables exist
    self._oracle_fn = tf.function(self._simulator.expected_engagement,
                                  autograph=False)

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

  def expected_engagement(self) -> np.ndarray:
    """float32 [U, N]: each item's expected engagement for each current user.

    Reads the hidden user state; for oracle references only, never a
    deployable policy.
    """
    if not self._simulator.built:
      self.reset()
    return self._oracle_fn().numpy()

  def lookahead_values(self, lookahead: lookahead_lib.Lookahead,
                       first_items: np.ndarray,
                       seed: tf.Tensor | None = None) -> np.ndarray:
    """float32 [U, C]: `lookahead`'s value of recommending each of
    `first_items` [U, C] now (mean engagement over its simulated futures).

    Reads the hidden state; for oracle references only, never a deployable
    policy. The futures' draws are keyed on `seed`, by default a stream
    apart from the environment's own (`SEARCH_SEED_OFFSET`): given the seed
    of the environment's next step, a one-branch search of the actions the
    environment then receives reproduces its trajectory.
    """
    if not self._simulator.built:
      self.reset()
    if seed is None:
      seed = self.next_step_seed() + tf.constant([SEARCH_SEED_OFFSET, 0],
                                                 tf.int64)
    return lookahead.values(self._simulator.hidden_state(), first_items,
                            seed).numpy()

  def next_step_seed(self) -> tf.Tensor:
    """The seed the environment's next step will use."""
    return tf.constant([self._seed, self._steps_taken + 1], tf.int64)

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
    if not self._simulator.built:
      self._simulator.build(seed)
      # A concrete function of flat tensors: calling it skips matching the
      # arguments to a trace, which costs as much as the step's ops.
      self._step_fn = tf.function(self._simulator.step, autograph=False
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
    if not self._simulator.built:
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


# Simultaneous user slots of an environment built without saying how many.
DEFAULT_NUM_USERS = 64


def make_env(scenario: str = "interest_evolution",
             num_users: int = DEFAULT_NUM_USERS,
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
  return RecSimEnvironment(build_scenario(scenario, num_users, seed,
                                          **overrides), seed=int(seed))


def build_scenario(scenario: str, num_users: int, seed: int,
                   **overrides: Any) -> interest_evolution.Scenario:
  """The registered scenario, checked (see `make_env` for the arguments)."""
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"seed must be an int, got {seed!r}")
  return registry.build_scenario(scenario, num_users=num_users, seed=int(seed),
                                 **overrides)
