"""Collect-and-train rounds for off-policy and on-policy TF-Agents agents.

A learner owns the agent, its data path (replay buffer or on-policy batch)
and the collection driver; the runner only calls `run_iteration`,
checkpoints `checkpoint_objects` and evaluates `greedy_policy` and any
`extra_evaluation_policies`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generic, Mapping, TypeVar

import numpy as np
import tensorflow as tf
from tf_agents.agents import tf_agent
from tf_agents.environments import py_environment, tf_environment
from tf_agents.policies import py_policy, py_tf_eager_policy, tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step
from tf_agents.trajectories import time_step as ts
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.trajectories import trajectory as trajectory_lib
from tf_agents.utils import common

from lerl_recsim import tf_environment as tf_environment_lib
from lerl_recsim.agents.draws import Draws, sample_sequences


AgentT = TypeVar("AgentT")
T = TypeVar("T")


def _nothing() -> tuple[()]:
  return ()


@dataclasses.dataclass(frozen=True)
class FollowUp(Generic[T]):
  """Work a collection round runs besides its steps: `prepare()` before the
  first step, reading models and buffers as they stand (a replay sample),
  and `finish(prepared)` after the last step (the gradient steps on that
  sample), whose result the round returns. Both are plain functions of
  TensorFlow ops; the collector compiles them.

  On the graph path both run in the round's graph call; what `finish`
  computes from `prepared` without reading the steps' writes (the
  gradients of a sample drawn before them) then runs beside the steps, on
  another TensorFlow thread, and only its writes (the weight update) wait
  for them.
  """

  finish: Callable[[Any], T]
  prepare: Callable[[], Any] = _nothing


class CompiledPolicy(py_policy.PyPolicy):
  """A stateless TF policy as a py policy over a batched environment, called
  through one concrete function of flat tensors.

  `PyTFEagerPolicy` calls a `tf.function` with the nested time step, and
  matching that nest to a trace costs more Python time per step than the
  policy's own ops; a concrete function over the flattened nest skips it.
  """

  def __init__(self, policy: tf_policy.TFPolicy):
    if tf.nest.flatten(policy.policy_state_spec):
      raise ValueError(f"{type(policy).__name__} keeps a policy state; "
                       "CompiledPolicy serves stateless policies only")
    super().__init__(tensor_spec.to_nest_array_spec(policy.time_step_spec),
                     tensor_spec.to_nest_array_spec(policy.action_spec),
                     info_spec=tensor_spec.to_nest_array_spec(policy.info_spec))
    time_step_spec = policy.time_step_spec
    batched = [tf.TensorSpec([None, *spec.shape], spec.dtype)
               for spec in tf.nest.flatten(time_step_spec)]

    def flat_action(*flat: tf.Tensor) -> list[tf.Tensor]:
      time_step = tf.nest.pack_sequence_as(time_step_spec, list(flat))
      return tf.nest.flatten(policy.action(time_step))

    self._structure = policy.policy_step_spec
    self._action_fn = tf.function(flat_action, autograph=False
                                  ).get_concrete_function(*batched)

  def _action(self, time_step: ts.TimeStep, policy_state: Any = ()
              ) -> policy_step.PolicyStep:
    outputs = self._action_fn(*map(tf.convert_to_tensor,
                                   tf.nest.flatten(time_step)))
    return tf.nest.pack_sequence_as(self._structure,
                                    [output.numpy() for output in outputs])


def eager_policy(policy: tf_policy.TFPolicy) -> py_policy.PyPolicy:
  """A TF policy as a compiled py policy over a batched environment."""
  if tf.nest.flatten(policy.policy_state_spec):
    return py_tf_eager_policy.PyTFEagerPolicy(
        policy, use_tf_function=True, batch_time_steps=False)
  return CompiledPolicy(policy)


def observer_of(buffer: tf_uniform_replay_buffer.TFUniformReplayBuffer
                ) -> Callable[[trajectory_lib.Trajectory], None]:
  """A compiled observer appending trajectories stacked on a time axis
  ([B, T, ...]) one step at a time: one TF call per collection round, to a
  concrete function of flat tensors per round length T."""
  spec = buffer.data_spec
  compiled: dict[int, Any] = {}

  def compile_for(steps: int) -> Any:
    def add(*flat: tf.Tensor) -> None:
      trajectories = tf.nest.pack_sequence_as(spec, list(flat))
      for t in range(steps):
        buffer.add_batch(tf.nest.map_structure(lambda x: x[:, t], trajectories))

    return tf.function(add, autograph=False).get_concrete_function(*[
        tf.TensorSpec([None, steps, *s.shape], s.dtype)
        for s in tf.nest.flatten(spec)])

  def observe(trajectories: trajectory_lib.Trajectory) -> None:
    steps = tf.nest.flatten(trajectories)[0].shape[1]
    if steps not in compiled:
      compiled[steps] = compile_for(steps)
    compiled[steps](*map(tf.convert_to_tensor, tf.nest.flatten(trajectories)))

  return observe


class Collector:
  """Steps a batched environment with a policy and feeds an observer the
  round's trajectories stacked on a time axis.

  Counts environment steps (each one step of every user slot); TF-Agents'
  `PyDriver` counts user-steps instead, which makes "steps per iteration"
  depend on the number of users.
  """

  def __init__(self, env: py_environment.PyEnvironment, policy: Any,
               observer: Callable[[trajectory_lib.Trajectory], None],
               recorded_action: Callable[[Any], Any] | None = None):
    self._env = env
    self._policy = eager_policy(policy)
    self._observer = observer
    self._recorded_action = recorded_action or (lambda action: action)
    self._time_step = None
    self._compiled: dict[FollowUp, tuple[Any, Any]] = {}
    self.user_steps = 0  # every slot's steps, since construction

  def run(self, steps: int, follow_up: FollowUp[T] | None = None
          ) -> T | None:
    """Collects `steps` steps of every user between `follow_up`'s prepare
    and finish; returns finish's result."""
    if self._time_step is None:
      self._time_step = self._env.reset()
    finish, prepared = None, None
    if follow_up:
      if follow_up not in self._compiled:
        self._compiled[follow_up] = (common.function(follow_up.prepare),
                                     common.function(follow_up.finish))
      prepare, finish = self._compiled[follow_up]
      prepared = prepare()
    collected = []
    for _ in range(steps):
      action_step = self._policy.action(self._time_step)
      next_time_step = self._env.step(action_step.action)
      recorded = action_step._replace(
          action=self._recorded_action(action_step.action))
      collected.append(trajectory_lib.from_transition(
          self._time_step, recorded, next_time_step))
      self._time_step = next_time_step
    self.user_steps += steps * self._env.batch_size
    self._observer(tf.nest.map_structure(lambda *steps: np.stack(steps, 1),
                                         *collected))
    return finish(prepared) if finish else None


def sample_action(policy: tf_policy.TFPolicy, time_step: ts.TimeStep,
                  key: tf.Tensor) -> policy_step.PolicyStep:
  """A stateless policy's action drawn from its distribution by a stateless
  draw keyed on `key`, with the policy's info."""
  step = policy.distribution(time_step)
  action = step.action.sample(seed=tf.cast(key, tf.int32))
  return step._replace(action=tf.cast(action, policy.action_spec.dtype))


class DrawnSamplingPolicy(tf_policy.TFPolicy):
  """Samples a stateless policy's action distribution with keys from a
  `Draws` (which a checkpoint holds), keeping its policy info: the
  collection policy of on-policy agents (PPO's needs the distribution's
  parameters in its info)."""

  def __init__(self, policy: tf_policy.TFPolicy, draws: Draws | None,
               policy_state_spec: Any = (), info_spec: Any = None):
    if tf.nest.flatten(policy.policy_state_spec):
      raise ValueError(f"{type(policy).__name__} keeps a policy state; "
                       f"{type(self).__name__} samples stateless policies "
                       "only")
    super().__init__(policy.time_step_spec, policy.action_spec,
                     policy_state_spec=policy_state_spec,
                     info_spec=policy.info_spec if info_spec is None
                     else info_spec)
    self._policy = policy
    self._draws = draws

  def _variables(self):
    return self._policy.variables()

  def _distribution(self, time_step, policy_state):
    raise NotImplementedError(f"{type(self).__name__} only samples actions")

  def _action(self, time_step, policy_state, seed=None):
    del seed  # the draws key them
    return sample_action(self._policy, time_step, self._draws.key())


class SeededSamplingPolicy(DrawnSamplingPolicy):
  """Samples a stateless policy's action distribution with stateless draws
  keyed on (seed, steps since the initial state).

  Evaluation starts every run from the initial state, so evaluating twice
  with one seed draws the same actions, whatever ran before; a stateful
  random op would carry on from its previous draws instead.
  """

  def __init__(self, policy: tf_policy.TFPolicy, seed: int):
    super().__init__(policy, None,
                     policy_state_spec=tf.TensorSpec((), tf.int64),
                     info_spec=())
    self._seed = int(seed)

  def _action(self, time_step, policy_state, seed=None):
    del seed  # the policy's own seed and step count key the draws
    key = tf.stack([tf.constant(self._seed, tf.int64), policy_state[0]])
    action = sample_action(self._policy, time_step, key)
    return policy_step.PolicyStep(action.action, policy_state + 1, ())


class GraphCollector:
  """Collection on the fast path: for a `tf_environment` environment, the
  policy, the environment step and the observer (a replay write) of many
  steps run as one graph call, a `tf.while_loop`; afterwards the
  environment absorbs the steps' reports (metrics of ended sessions, the
  planner's part). Same interface as `Collector`.
  """

  def __init__(self, env: Any, policy: tf_policy.TFPolicy,
               observer: Callable[[trajectory_lib.Trajectory], Any],
               recorded_action: Callable[[Any], Any] | None = None):
    self._env = env
    self._policy = policy
    self._observer = observer
    self._recorded_action = recorded_action or (lambda action: action)
    self._compiled: dict[int, Any] = {}
    self._started = False
    self.user_steps = 0  # every slot's steps, since construction

  def _collect_fn(self, steps: int, follow_up: FollowUp | None,
                  first: bool, last: bool) -> Any:
    """The compiled round of `steps` steps: the first of a round prepares
    the follow-up, the last finishes it; between them its prepared value
    passes from call to call."""
    env, policy = self._env, self._policy
    report_structure = env.step_report()

    def collect(prepared: Any) -> Any:
      if follow_up and first:
        prepared = follow_up.prepare()
      arrays = [tf.TensorArray(x.dtype, size=steps, element_shape=x.shape)
                for x in tf.nest.flatten(report_structure)]

      def body(t, time_step, arrays):
        action_step = policy.action(time_step)
        next_time_step = env.step(action_step.action)
        recorded = action_step._replace(
            action=self._recorded_action(action_step.action))
        self._observer(trajectory_lib.from_transition(time_step, recorded,
                                                      next_time_step))
        arrays = [a.write(t, x) for a, x in
                  zip(arrays, tf.nest.flatten(env.step_report()))]
        return t + 1, next_time_step, arrays

      _, _, arrays = tf.while_loop(
          lambda t, *_: t < steps, body,
          [tf.constant(0), env.current_time_step(), arrays])
      reports = tf.nest.pack_sequence_as(report_structure,
                                         [a.stack() for a in arrays])
      if follow_up and last:
        return reports, follow_up.finish(prepared)
      return reports, prepared

    return tf.function(collect, autograph=False)

  def run(self, steps: int, follow_up: FollowUp[T] | None = None
          ) -> T | None:
    """Collects `steps` steps of every user between `follow_up`'s prepare
    and finish, both inside the graph calls of the steps (one call per
    round unless the environment takes fewer steps per call); returns
    finish's result."""
    if not self._started:
      if not self._env.started:  # else restored from a checkpoint
        tf_environment_lib.reset_and_absorb(self._env)
      self._started = True
    chunk = self._env.steps_per_call or steps
    done, carried = 0, ()
    while done < steps:
      n = min(chunk, steps - done)
      # Without a follow-up every call of n steps is the same function.
      key = (n, follow_up, bool(follow_up) and done == 0,
             bool(follow_up) and done + n == steps)
      if key not in self._compiled:
        self._compiled[key] = self._collect_fn(*key)
      reports, carried = self._compiled[key](carried)
      self._env.absorb_reports(tf.nest.map_structure(lambda x: x.numpy(),
                                                     reports))
      done += n
    self.user_steps += steps * self._env.batch_size
    return carried if follow_up else None


def initialized_agent(agent_class: Callable[..., AgentT], *args: Any,
                      learning_rate: float, **kwargs: Any) -> AgentT:
  """`agent_class(*args, **kwargs)` with an Adam optimiser at `learning_rate`
  and the train-step counter a checkpoint holds (the variable
  "train_step"), initialised: how every learning family makes its agent."""
  agent = agent_class(
      *args, optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate),
      train_step_counter=tf.Variable(0, dtype=tf.int64, name="train_step"),
      **kwargs)
  agent.initialize()
  return agent


def make_collector(env: Any, policy: tf_policy.TFPolicy,
                   buffer: tf_uniform_replay_buffer.TFUniformReplayBuffer,
                   recorded_action: Callable[[Any], Any] | None = None
                   ) -> Collector | GraphCollector:
  """The graph collector for TensorFlow environments (training's fast
  path), the step-by-step one for Python environments."""
  if isinstance(env, tf_environment.TFEnvironment):
    return GraphCollector(env, policy, buffer.add_batch, recorded_action)
  return Collector(env, policy, observer_of(buffer), recorded_action)


class _CollectingLearner:
  """What every learner shares: a collector in `self._collector`."""

  _collector: Collector | GraphCollector

  @property
  def user_steps(self) -> int:
    """User-steps collected by this learner (not restored from checkpoints)."""
    return self._collector.user_steps

  def extra_evaluation_policies(self, seed: int
                                ) -> Mapping[str, tf_policy.TFPolicy]:
    """Policies evaluated besides `greedy_policy`, by the summary key of
    their results; `seed` seeds any sampling."""
    del seed
    return {}


@dataclasses.dataclass(frozen=True)
class ReplaySettings:
  """How an off-policy family collects and replays: the hyper-parameters
  the DQN and bandit families share (each family's `Hyperparameters`
  extends it).

  Attributes:
    replay_capacity: transitions kept in the replay buffer.
    batch_size: transitions per gradient step.
    collect_steps_per_iteration: environment steps (of all users) per
      iteration.
    train_steps_per_iteration: gradient steps per iteration.
    initial_collect_steps: environment steps before the first gradient step.
  """

  replay_capacity: int = 100_000
  batch_size: int = 256
  collect_steps_per_iteration: int = 4
  train_steps_per_iteration: int = 1
  initial_collect_steps: int = 10


class OffPolicyLearner(_CollectingLearner):
  """Replay-buffer learning (DQN, bandits): each iteration collects
  `replay.collect_steps_per_iteration` environment steps (each one step of
  every user) and runs `replay.train_steps_per_iteration` gradient steps
  on experience sampled before that collection: the iteration's newest
  steps wait for the next iteration's sample, and in exchange the first
  gradient is computed beside the collection.

  Args:
    agent: an initialised TF-Agents agent.
    env: the batched training environment, TensorFlow-native (the fast
      path) or Python.
    replay: capacity (split evenly over user slots), sampled sequences per
      gradient step, and steps collected and gradient steps per iteration.
    sequence_length: steps per sampled sequence (2 for one-step TD).
    prepare: optional transform of a sampled batch (e.g. drop boundaries).
    draws: the keys of every random draw of collection and sampling (the
      learner checkpoints it, so a resumed run draws as an uninterrupted
      one).
    collect_policy: the policy that acts while collecting; its random
      draws must be keyed on `draws` (TF-Agents' collect policies draw with
      stateful ops).
    greedy_policy: the policy to evaluate and export; `agent.policy` if None.
    recorded_action: maps the collect policy's action to what the replay
      buffer stores (e.g. a slate's top item).
  """

  def __init__(self, agent: tf_agent.TFAgent, env: Any, *,
               replay: ReplaySettings, sequence_length: int,
               draws: Draws, collect_policy: tf_policy.TFPolicy,
               prepare: Callable[[Any], Any] | None = None,
               greedy_policy: Any = None,
               recorded_action: Callable[[Any], Any] | None = None):
    self.agent = agent
    self.draws = draws
    self.greedy_policy = greedy_policy or agent.policy
    self.collect_policy = collect_policy
    self.replay_buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
        agent.collect_data_spec, batch_size=env.batch_size,
        max_length=max(replay.replay_capacity // env.batch_size,
                       sequence_length + 1))
    self._collector = make_collector(env, self.collect_policy,
                                     self.replay_buffer, recorded_action)
    self._replay = replay
    self._warmed_up = False
    prepare = prepare or (lambda experience: experience)

    def sample() -> list[Any]:
      """The iteration's batches, drawn from the replay buffer as it stands
      before the iteration's collection, in the graph call, not by a
      prefetching dataset, whose draws would race collection's writes."""
      return [prepare(sample_sequences(self.replay_buffer, draws.key(),
                                       replay.batch_size, sequence_length))
              for _ in range(replay.train_steps_per_iteration)]

    def train(batches: list[Any]) -> tf.Tensor:
      """The iteration's gradient steps; the last one's loss (0 if none)."""
      loss = tf.constant(0.0)
      for batch in batches:
        loss = agent.train(batch).loss
      return loss

    # Sampled before collection, so that the first gradient is computed
    # beside it (see FollowUp).
    self._train = FollowUp(finish=train, prepare=sample)

  def checkpoint_objects(self) -> Mapping[str, Any]:
    return {"agent": self.agent, "replay_buffer": self.replay_buffer,
            "draws": self.draws}

  def run_iteration(self) -> dict[str, float]:
    if not self._warmed_up:
      # Checked once (an eager op costs as much as a collect step): a
      # restored replay buffer needs no initial collection.
      if self.replay_buffer.num_frames() == 0:
        self._collector.run(self._replay.initial_collect_steps)
      self._warmed_up = True
    loss = self._collector.run(self._replay.collect_steps_per_iteration,
                               self._train)
    return {"loss": float(loss)}


class OnPolicyLearner(_CollectingLearner):
  """PPO-style learning: each iteration collects `collect_steps` steps of
  every user with the current policy and trains on that batch once.

  Args:
    agent: an initialised TF-Agents on-policy agent.
    env: the batched training environment, TensorFlow-native (the fast
      path) or Python.
    collect_steps: environment steps per iteration.
  """

  def __init__(self, agent: tf_agent.TFAgent, env: Any, *,
               collect_steps: int):
    self.agent = agent
    self.draws = Draws()
    self.greedy_policy = agent.policy
    self._buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
        agent.collect_data_spec, batch_size=env.batch_size,
        max_length=collect_steps + 1)
    self._collector = make_collector(
        env, DrawnSamplingPolicy(agent.collect_policy, self.draws),
        self._buffer)
    self._collect_steps = collect_steps

    def train(unused_prepared: Any) -> tf.Tensor:
      """One update on the batch just collected, which it then discards."""
      loss = agent.train(self._buffer.gather_all()).loss
      self._buffer.clear()
      return loss

    self._train = FollowUp(finish=train)

  def checkpoint_objects(self) -> Mapping[str, Any]:
    return {"agent": self.agent, "draws": self.draws}

  def extra_evaluation_policies(self, seed: int
                                ) -> Mapping[str, tf_policy.TFPolicy]:
    """The stochastic policy being learned, sampled ("sampled"): the greedy
    mode of a barely trained categorical can repeat one item a whole
    session, which the policy that collected the data would not."""
    return {"sampled": SeededSamplingPolicy(self.agent.collect_policy, seed)}

  def run_iteration(self) -> dict[str, float]:
    loss = self._collector.run(self._collect_steps, self._train)
    return {"loss": float(loss)}


def drop_boundaries(experience: trajectory_lib.Trajectory) -> trajectory_lib.Trajectory:
  """Removes LAST->FIRST transitions (their action was ignored) from a
  batch of single-step trajectories [B, 1, ...]."""
  keep = ~experience.is_boundary()[:, 0]
  return tf.nest.map_structure(lambda t: tf.boolean_mask(t, keep), experience)
