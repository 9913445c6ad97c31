"""The training run: environments, loop, checkpoints, evaluation, results.

One function, `train_and_evaluate`, serves every agent family: it claims the
run directory for its configuration, restores the last checkpoint (agent,
replay buffer, iteration, planner reflections), alternates learner
iterations with progress lines, TensorBoard summaries, checkpoints and
evaluations on fresh users (of the greedy policy, and of any policy the
learner adds, such as PPO's sampled one), then writes `summary.json` and
exports the greedy policy. gin's operative configuration (what gin
supplied, defaults included) goes beside config.json.

Its parts live apart: the run directory and checkpoints (`checkpoints`),
progress lines (`progress`), evaluations on fresh users (`evaluations`) and
what is recorded of the planner (`planner_counts`).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any, Callable, Mapping, Protocol

import gin
import tensorflow as tf
from absl import logging
from tf_agents.environments import py_environment
from tf_agents.policies import py_policy
from tf_agents.utils import common

import lerl_recsim
from lerl_recsim import environment as environment_lib
from lerl_recsim import (learning_curves, planner_environment, results,
                         tf_environment)
from lerl_recsim.agents import learners
from lerl_recsim.experiments import checkpoints, policy_export, progress
from lerl_recsim.experiments import run_config as run_config_lib
from lerl_recsim.experiments.checkpoints import RunDirectory
from lerl_recsim.experiments.evaluations import (EVAL_SEED_OFFSET, MAIN,
                                                 run_evaluation)
from lerl_recsim.experiments.planner_counts import planner_counts
from lerl_recsim.planner import ReflectionPool


class Learner(Protocol):
  agent: Any
  greedy_policy: Any
  user_steps: int  # collected so far, for progress rates

  def checkpoint_objects(self) -> Mapping[str, Any]:
    ...

  def extra_evaluation_policies(self, seed: int) -> Mapping[str, Any]:
    ...

  def run_iteration(self) -> dict[str, float]:
    ...


def build_environments(run: run_config_lib.RunConfig, train_seed: int,
                       reflections: pathlib.Path | None = None
                       ) -> tuple[Any, py_environment.PyEnvironment]:
  """Training environment (TensorFlow-native: the fast path) and evaluation
  environment (the Python one).

  Evaluation plans with the training planner's evaluation view: the same
  model, cache and reflection pool (read, never written), counters of its
  own, and the run's planner mode, so that the low level is evaluated under
  the masks it was trained under (in the background: the LLM's plan where
  it has answered the situation, the heuristic's meanwhile; both counted).
  An LLM planner starts from the pool saved at `reflections`, if any, which
  the view then reads.
  """
  evaluation_env = lerl_recsim.make_env(
      run.scenario, num_users=run.num_eval_sessions,
      seed=run.seed + EVAL_SEED_OFFSET, **run.scenario_overrides)
  backend = run.planner_backend
  if backend is None:
    return (tf_environment.make_tf_env(run.scenario, num_users=run.num_users,
                                       seed=train_seed,
                                       **run.scenario_overrides),
            evaluation_env)
  planner_options: dict[str, Any] = {}
  if backend != "heuristic":
    if run.planner_cache:
      planner_options["cache_path"] = run.planner_cache
    if reflections is not None and reflections.exists():
      planner_options["reflections"] = ReflectionPool.load(reflections)
  wait = run.planner_mode == "wait"
  planned = tf_environment.make_planned_tf_env(
      run.scenario, planner=backend, replan_every=run.replan_every,
      num_users=run.num_users, seed=train_seed, wait_for_planner=wait,
      planner_options=planner_options, **run.scenario_overrides)
  return planned, planner_environment.make_planned_env(
      evaluation_env, planned.planner.evaluation_view(), run.replan_every,
      seed=run.seed, wait_for_planner=wait)


def evaluation_policies(learner: Learner, run: run_config_lib.RunConfig
                        ) -> dict[str, py_policy.PyPolicy]:
  """The greedy policy (as `MAIN`) and the learner's extra evaluation
  policies, as py policies; sampling is seeded by the run's seed."""
  extra = learner.extra_evaluation_policies(run.seed + EVAL_SEED_OFFSET)
  if MAIN in extra:
    raise ValueError(f"an extra evaluation policy may not be named {MAIN!r}")
  return {key: learners.eager_policy(policy) for key, policy in
          {MAIN: learner.greedy_policy, **extra}.items()}


def run_record(run: run_config_lib.RunConfig,
               hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
  """What config.json records of a run, its identity: the run's settings,
  the family's hyper-parameters, the scenario's resolved settings (checked
  on a one-user scenario, a few milliseconds, before anything else is
  built), gin bindings and the package version."""
  scenario = environment_lib.build_scenario(run.scenario, 1, run.seed,
                                            **run.scenario_overrides)
  config = {"run": run.to_dict(), "hyperparameters": dict(hyperparameters),
            "scenario": dict(scenario.config),
            "lerl_recsim_version": lerl_recsim.__version__}
  config["scenario"].pop("num_users", None)
  if run.gin_bindings:
    config["gin_bindings"] = dict(run.gin_bindings)
  return config


def use_intra_op_threads(threads: int) -> None:
  """Sets TensorFlow's threads per op, which it reads once, when it starts
  running ops; a process already running with another number is refused
  (a run must repeat with the number it records)."""
  current = tf.config.threading.get_intra_op_parallelism_threads()
  if current == threads:
    return
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  except RuntimeError:
    raise ValueError(
        f"intra_op_threads={threads} cannot take effect: TensorFlow already "
        f"runs ops in this process with intra_op_threads={current}; train in "
        "a new process, or with that number") from None


def seed_everything(seed: int) -> None:
  """Same seed, same run: Keras draws unseeded initializer seeds from
  Python's `random`, so Python, NumPy and TensorFlow are seeded together,
  and kernels are asked to be deterministic."""
  tf.keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()


@dataclasses.dataclass
class TrainingState:
  """What a learning run trains and checkpoints: its environments, learner,
  counters (iterations; training user-steps, so that learning curves
  against user-steps continue across a resume; seconds run up to the last
  checkpoint, so that a resumed run's wall time counts its earlier
  processes) and checkpointer."""

  train_env: Any
  eval_env: py_environment.PyEnvironment
  learner: Learner
  iteration: tf.Variable
  user_steps: tf.Variable
  wall_time_s: tf.Variable
  checkpointer: common.Checkpointer


def restored_training(run: run_config_lib.RunConfig, directory: RunDirectory,
                      make_learner: Callable[[Any], Learner]
                      ) -> TrainingState:
  """The learner on a fresh training environment, restored from the run's
  last checkpoint if any: a resumed run continues with the same users,
  plans, planner state and reflections."""
  checkpoints.checkpointed_iteration(directory)  # a damaged one stops here
  train_env, eval_env = build_environments(run, run.seed,
                                           directory.reflections)
  learner = make_learner(train_env)
  iteration = tf.Variable(0, dtype=tf.int64, name="iteration")
  user_steps = tf.Variable(0, dtype=tf.int64, name="user_steps")
  wall_time_s = tf.Variable(0.0, dtype=tf.float64, name="wall_time_s")
  checkpointer = common.Checkpointer(
      ckpt_dir=str(directory.checkpoints), max_to_keep=2, iteration=iteration,
      user_steps=user_steps, wall_time_s=wall_time_s,
      environment=train_env.checkpoint_state(),
      **learner.checkpoint_objects())
  checkpoints.restore(checkpointer, iteration, train_env, directory)
  return TrainingState(train_env, eval_env, learner, iteration, user_steps,
                       wall_time_s, checkpointer)


def train_and_evaluate(
    run: run_config_lib.RunConfig, root_dir: str,
    make_learner: Callable[[py_environment.PyEnvironment], Learner] | None,
    hyperparameters: Mapping[str, Any],
    scripted_policy: Callable[[py_environment.PyEnvironment],
                              py_policy.PyPolicy] | None = None,
) -> dict[str, Any]:
  """Runs (or resumes, or reuses) one training run; returns its summary.

  Args:
    run: run-level settings.
    root_dir: the run's directory; refused if it holds another configuration.
    make_learner: builds the learner on the training environment (None for
      scripted agents, which are only evaluated).
    hyperparameters: the family's resolved keyword arguments, recorded.
    scripted_policy: builds a fixed py policy on the evaluation environment.
  """
  use_intra_op_threads(run.intra_op_threads)
  directory = RunDirectory(root_dir)
  config = run_record(run, hyperparameters)
  results.claim_directory(directory.root, config)
  if directory.summary.exists():
    logging.info("%s is a finished run; reusing its summary", directory.root)
    return json.loads(directory.summary.read_text())

  seed_everything(run.seed)
  state = (restored_training(run, directory, make_learner)
           if make_learner is not None else None)
  if state is None:
    train_env, eval_env = build_environments(run, run.seed)
  else:
    train_env, eval_env = state.train_env, state.eval_env
  # What gin supplied to everything built so far, defaults included.
  directory.operative_config.write_text(gin.operative_config_str())

  # A resumed run's clock starts at its checkpoint's time (the time its
  # killed process spent after that checkpoint is not counted: it is run
  # again).
  wall_start = time.perf_counter() - (
      float(state.wall_time_s.numpy()) if state is not None else 0.0)
  eval_writer = tf.summary.create_file_writer(str(directory.eval))
  evaluated = None
  if state is not None:
    policies = evaluation_policies(state.learner, run)
    train_writer = tf.summary.create_file_writer(str(directory.train))
    with train_writer.as_default(step=state.iteration):
      evaluated = run_training(run, state, directory, eval_writer, policies,
                               wall_start)
  else:
    policies = {MAIN: scripted_policy(eval_env)}
  if evaluated is None:
    evaluated = run_evaluation(
        train_env, eval_env, policies, eval_writer,
        int(state.iteration.numpy()) if state else 0, directory,
        int(state.user_steps.numpy()) if state else None)
  summary = evaluated.pop(MAIN)
  summary["config"] = config
  summary["planner"] = {
      "train": planner_counts(train_env) if state is not None else {},
      "eval": summary.pop("planner"),
  }
  summary["wall_time_s"] = time.perf_counter() - wall_start
  if state is None:
    summary["iterations"] = 0
  else:
    summary.update(finished_training(state, directory))
  summary.update(evaluated)  # the extra policies' evaluations
  results.write_json_atomic(directory.summary, summary)
  return summary


def finished_training(state: TrainingState, directory: RunDirectory
                      ) -> dict[str, Any]:
  """A learning run's end: the greedy policy exported, the last checkpoint
  saved; returns what its summary adds (iterations, user-steps, learning
  curve, policy directory)."""
  policy_export.export_policy(state.learner.greedy_policy,
                              state.learner.agent.train_step_counter,
                              directory.policy)
  checkpoints.save_checkpoint(state.checkpointer, state.iteration,
                              state.train_env, directory)
  return {"iterations": int(state.iteration.numpy()),
          "user_steps": int(state.user_steps.numpy()),
          "learning_curve": learning_curves.summarise(
              learning_curves.read_history(directory.root)),
          "policy_dir": str(directory.policy)}


def run_training(run: run_config_lib.RunConfig, state: TrainingState,
                 directory: RunDirectory, eval_writer: tf.summary.SummaryWriter,
                 policies: Mapping[str, py_policy.PyPolicy], wall_start: float
                 ) -> dict[str, dict[str, Any]] | None:
  """Iterates until `run.num_iterations`, logging, checkpointing, evaluating;
  keeps `state.user_steps` (the run's training user-steps) up to date, and
  at each checkpoint `state.wall_time_s` (seconds since the `perf_counter`
  time `wall_start`).

  With `run.stop_when_levelled`, stops at the first evaluation at which the
  learning curve has levelled off and returns that evaluation (it is the
  final one); otherwise returns None.
  """
  rule = learning_curves.PlateauRule()
  learner, train_env, eval_env = state.learner, state.train_env, state.eval_env
  iteration, user_steps = state.iteration, state.user_steps
  steps_before = int(user_steps.numpy()) - learner.user_steps
  log = progress.ProgressLog(run, learner, train_env, int(iteration.numpy()))
  while int(iteration.numpy()) < run.num_iterations:
    outcome = learner.run_iteration()
    iteration.assign_add(1)
    step = int(iteration.numpy())
    log.iteration_done(step, outcome["loss"])
    # Written to the variable only when a checkpoint or the summary reads
    # it: an eager assignment per iteration costs as much as a collect step.
    trained = steps_before + learner.user_steps
    levelled = False
    # Evaluation first: the checkpoint then holds what it left in the
    # planner (plans it asked for), as an uninterrupted run has it.
    if step % run.eval_interval == 0 and step < run.num_iterations:
      paused = time.perf_counter()
      evaluated = run_evaluation(train_env, eval_env, policies, eval_writer,
                                 step, directory, trained)
      log.exclude(time.perf_counter() - paused)  # rates count training only
      levelled = run.stop_when_levelled and learning_curves.summarise(
          learning_curves.read_history(directory.root), rule)["levelled_off"]
    if step % run.checkpoint_interval == 0 or levelled:
      user_steps.assign(trained)
      state.wall_time_s.assign(time.perf_counter() - wall_start)
      checkpoints.save_checkpoint(state.checkpointer, iteration, train_env,
                                  directory)
    if levelled:
      logging.info("learning curve levelled off at iteration %d; training "
                   "stops", step)
      return evaluated
  user_steps.assign(steps_before + learner.user_steps)
  return None


