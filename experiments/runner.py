"""The training run: environments, loop, checkpoints, evaluation, results.

One function, `train_and_evaluate`, serves every agent family: it claims the
run directory for its configuration, restores the last checkpoint (agent,
replay buffer, iteration, planner reflections), alternates learner
iterations with progress lines, TensorBoard summaries, checkpoints and
evaluations on fresh users (of the greedy policy, and of any policy the
learner adds, such as PPO's sampled one), then writes `summary.json` and
exports the greedy policy. gin's operative configuration (what gin
supplied, defaults included) goes beside config.json.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import time
from typing import Any, Callable, Mapping, Protocol

import gin
import numpy as np
import tensorflow as tf
from absl import logging
from tf_agents.environments import py_environment
from tf_agents.policies import py_policy
from tf_agents.utils import common

import lerl_recsim
from lerl_recsim import environment as environment_lib
from lerl_recsim import (evaluation, learning_curves, metrics,
                         planner_environment, results, tf_environment)
from lerl_recsim.agents import learners, networks
from lerl_recsim.experiments import policy_export
from lerl_recsim.experiments import run_config as run_config_lib
from lerl_recsim.planner import FALLBACK_CAUSES, Planner, ReflectionPool

EVAL_SEED_OFFSET = 1_000_003  # evaluation users never equal training users
# The key of the greedy (or scripted) policy's evaluation, whose results are
# the summary's top level; extra policies' go under their own keys.
MAIN = "greedy"


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


def scenario_environment(run: run_config_lib.RunConfig, num_users: int,
                         seed: int) -> environment_lib.RecSimEnvironment:
  return lerl_recsim.make_env(run.scenario, num_users=num_users, seed=seed,
                              **run.scenario_overrides)


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
  evaluation_env = scenario_environment(run, run.num_eval_sessions,
                                        run.seed + EVAL_SEED_OFFSET)
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


PLANNED_ENVIRONMENTS = (planner_environment.PlannedEnvironment,
                        tf_environment.PlannedTFEnvironment)


def planner_counts(env: Any) -> dict[str, float]:
  """LLM calls, cache hits, plans by origin (the LLM's, provisional,
  fallbacks in all and by cause) and user-steps of a planned env."""
  if not isinstance(env, PLANNED_ENVIRONMENTS):
    return {}
  m = env.planner_metrics()
  keys = ("llm_calls", "cache_hits", "llm_plans", "provisional_plans",
          "fallbacks", *(f"fallback_{c}" for c in FALLBACK_CAUSES),
          "planned_users", "user_steps")
  return {key: float(m.get(key, 0)) for key in keys}


def uses_llm(env: Any) -> bool:
  return isinstance(env, PLANNED_ENVIRONMENTS) and isinstance(env.planner,
                                                              Planner)


def counts_delta(after: Mapping[str, float],
                 before: Mapping[str, float]) -> dict[str, float]:
  return {key: after[key] - before.get(key, 0.0) for key in after}


class CheckpointError(RuntimeError):
  """A run's checkpoint exists but cannot be restored."""


def checkpointed_iteration(directory: "RunDirectory") -> int:
  """The iteration of the run's latest checkpoint (0 without one)."""
  latest = tf.train.latest_checkpoint(str(directory.checkpoints))
  if latest is None:
    return 0
  try:
    return int(tf.train.load_variable(
        latest, "iteration/.ATTRIBUTES/VARIABLE_VALUE"))
  except (tf.errors.OpError, ValueError) as error:
    raise CheckpointError(
        f"cannot read the checkpoint {latest} ({type(error).__name__}); it is "
        "corrupt — remove that directory to start over, or choose another "
        "--root_dir") from None


class RunDirectory:
  """Paths and files of one run under `root_dir`."""

  def __init__(self, root_dir: str):
    self.root = pathlib.Path(root_dir)
    self.train = self.root / "train"
    self.eval = self.root / "eval"
    self.checkpoints = self.train / "checkpoints"
    self.reflections = self.train / "reflections.json"
    # The training environment's state a checkpoint cannot hold (planner).
    self.environment_state = self.train / "environment_state.json"
    self.policy = self.root / "policy"
    self.summary = self.root / "summary.json"
    self.operative_config = self.root / "operative_config.gin"
    self.eval_history = self.eval / "history.jsonl"


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
  directory = RunDirectory(root_dir)
  probe = scenario_environment(run, 1, run.seed)  # validates the scenario early
  config = {"run": run.to_dict(), "hyperparameters": dict(hyperparameters),
            "scenario": dict(probe.config),
            "lerl_recsim_version": lerl_recsim.__version__}
  config["scenario"].pop("num_users", None)
  if run.gin_bindings:
    config["gin_bindings"] = dict(run.gin_bindings)
  results.claim_directory(directory.root, config)
  if directory.summary.exists():
    logging.info("%s is a finished run; reusing its summary", directory.root)
    return json.loads(directory.summary.read_text())

  # Same seed, same run: Keras draws unseeded initializer seeds from Python's
  # `random`, so seed Python, NumPy and TensorFlow together, and ask for
  # deterministic kernels.
  tf.keras.utils.set_random_seed(run.seed)
  tf.config.experimental.enable_op_determinism()
  iteration = tf.Variable(0, dtype=tf.int64, name="iteration")
  # Training user-steps, checkpointed so that learning curves against
  # user-steps continue across a resume.
  user_steps = tf.Variable(0, dtype=tf.int64, name="user_steps")
  learner = None
  checkpointer = None
  if make_learner is not None:
    checkpointed_iteration(directory)  # a damaged checkpoint stops here
    # A resumed run's training environment continues where the checkpoint
    # left it: the same users, plans and planner state.
    train_env, eval_env = build_environments(run, run.seed,
                                             directory.reflections)
    learner = make_learner(train_env)
    checkpointer = common.Checkpointer(
        ckpt_dir=str(directory.checkpoints), max_to_keep=2, iteration=iteration,
        user_steps=user_steps, environment=train_env.checkpoint_state(),
        **learner.checkpoint_objects())
    try:
      checkpointer.initialize_or_restore().expect_partial()
    except (tf.errors.OpError, ValueError, AssertionError) as error:
      raise CheckpointError(
          f"cannot restore the checkpoint in {directory.checkpoints} "
          f"({type(error).__name__}: {str(error).splitlines()[0]}); it is "
          "corrupt or from another program version — remove that directory "
          "to start over, or choose another --root_dir") from None
    if int(iteration.numpy()) > 0:
      logging.info("resuming %s at iteration %d", directory.root,
                   int(iteration.numpy()))
      load_environment_state(train_env, directory, int(iteration.numpy()))
  else:
    train_env, eval_env = build_environments(run, run.seed)
  # What gin supplied to everything built so far, defaults included.
  directory.operative_config.write_text(gin.operative_config_str())

  train_writer = tf.summary.create_file_writer(str(directory.train))
  eval_writer = tf.summary.create_file_writer(str(directory.eval))
  wall_start = time.perf_counter()
  if learner is not None:
    policies = evaluation_policies(learner, run)
    with train_writer.as_default(step=iteration):
      evaluated = run_training(run, learner, train_env, eval_env, iteration,
                               user_steps, checkpointer, directory,
                               eval_writer, policies)
  else:
    policies = {MAIN: scripted_policy(eval_env)}
    evaluated = None
  if evaluated is None:
    evaluated = run_evaluation(train_env, eval_env, policies, eval_writer,
                               iteration, directory,
                               int(user_steps.numpy()) if learner else None)
  summary = evaluated.pop(MAIN)
  summary["config"] = config
  summary["planner"] = {
      "train": planner_counts(train_env) if learner is not None else {},
      "eval": summary.pop("planner"),
  }
  summary["wall_time_s"] = time.perf_counter() - wall_start
  summary["iterations"] = int(iteration.numpy())
  if learner is not None:
    summary["user_steps"] = int(user_steps.numpy())
    summary["learning_curve"] = learning_curves.summarise(
        learning_curves.read_history(directory.root))
  summary.update(evaluated)  # the extra policies' evaluations
  if learner is not None:
    summary["policy_dir"] = str(directory.policy)
    policy_export.export_policy(learner.greedy_policy,
                                learner.agent.train_step_counter,
                                directory.policy)
    save_checkpoint(checkpointer, iteration, train_env, directory)
  results.write_json_atomic(directory.summary, summary)
  return summary


def evaluation_policies(learner: Learner, run: run_config_lib.RunConfig
                        ) -> dict[str, py_policy.PyPolicy]:
  """The greedy policy (as `MAIN`) and the learner's extra evaluation
  policies, as py policies; sampling is seeded by the run's seed."""
  extra = learner.extra_evaluation_policies(run.seed + EVAL_SEED_OFFSET)
  if MAIN in extra:
    raise ValueError(f"an extra evaluation policy may not be named {MAIN!r}")
  return {key: learners.eager_policy(policy) for key, policy in
          {MAIN: learner.greedy_policy, **extra}.items()}


def run_training(run, learner, train_env, eval_env, iteration,
                 user_steps: tf.Variable, checkpointer, directory, eval_writer,
                 policies: Mapping[str, py_policy.PyPolicy]
                 ) -> dict[str, dict[str, Any]] | None:
  """Iterates until `run.num_iterations`, logging, checkpointing, evaluating;
  keeps `user_steps` (the run's training user-steps) up to date.

  With `run.stop_when_levelled`, stops at the first evaluation at which the
  learning curve has levelled off and returns that evaluation (it is the
  final one); otherwise returns None.
  """
  rule = learning_curves.PlateauRule()
  steps_before = int(user_steps.numpy()) - learner.user_steps
  window_start = time.perf_counter()
  window_first_step = learner.user_steps
  recorder = networks.base_environment(train_env).episode_metrics
  losses: list[float] = []
  window_counts = planner_counts(train_env)
  started, first_iteration = time.perf_counter(), int(iteration.numpy())
  while int(iteration.numpy()) < run.num_iterations:
    outcome = learner.run_iteration()
    iteration.assign_add(1)
    step = int(iteration.numpy())
    losses.append(outcome["loss"])
    if step % run.log_interval == 0 or step == run.num_iterations:
      elapsed = time.perf_counter() - window_start
      recent = recorder.summary()
      rate = (learner.user_steps - window_first_step) / max(elapsed, 1e-9)
      remaining = ((run.num_iterations - step) *
                   (time.perf_counter() - started) / (step - first_iteration))
      counts = planner_counts(train_env)
      window = counts_delta(counts, window_counts)
      llm_share = ""
      if window.get("planned_users") and uses_llm(train_env):
        llm_share = (f" | LLM plans "
                     f"{window['llm_plans'] / window['planned_users']:.0%}")
      logging.info(
          "iteration %d/%d | %.0f user-steps/s | ETA %s | recent cumulative "
          "reward %.2f | interaction length %.1f | sessions %d | loss %.4f%s",
          step, run.num_iterations, rate,
          datetime.timedelta(seconds=round(remaining)),
          recent["cumulative_reward"]["mean"],
          recent["interaction_length"]["mean"], recent["num_sessions"],
          float(np.mean(losses)), llm_share)
      tf.summary.scalar("user_steps_per_second", rate)
      tf.summary.scalar("loss", float(np.mean(losses)))
      if recent["num_sessions"]:
        for name in ("cumulative_reward", "interaction_length", "step_reward"):
          tf.summary.scalar(f"train/{name}", recent[name]["mean"])
      for name, value in counts.items():
        tf.summary.scalar(f"planner/{name}", value)
      if window.get("planned_users"):
        # The LLM's share of the plans made since the last progress line.
        tf.summary.scalar("planner/llm_plan_share_recent",
                          window["llm_plans"] / window["planned_users"])
      window_counts = counts
      recorder.clear()
      losses.clear()
      window_start, window_first_step = time.perf_counter(), learner.user_steps
    # Written to the variable only when a checkpoint or the summary reads
    # it: an eager assignment per iteration costs as much as a collect step.
    trained = steps_before + learner.user_steps
    levelled = False
    # Evaluation first: the checkpoint then holds what it left in the
    # planner (plans it asked for), as an uninterrupted run has it.
    if step % run.eval_interval == 0 and step < run.num_iterations:
      paused = time.perf_counter()
      evaluated = run_evaluation(train_env, eval_env, policies, eval_writer,
                                 iteration, directory, trained)
      window_start += time.perf_counter() - paused  # rates count training only
      levelled = run.stop_when_levelled and learning_curves.summarise(
          learning_curves.read_history(directory.root), rule)["levelled_off"]
    if step % run.checkpoint_interval == 0 or levelled:
      user_steps.assign(trained)
      save_checkpoint(checkpointer, iteration, train_env, directory)
    if levelled:
      logging.info("learning curve levelled off at iteration %d; training "
                   "stops", step)
      return evaluated
  user_steps.assign(steps_before + learner.user_steps)
  return None


def evaluate_policy(eval_env, policy, train_env: Any = None) -> dict[str, Any]:
  """One session per fresh evaluation user: `{mean, ci95}` per metric,
  `num_sessions`, `exposure_curve` and the evaluation's `planner` counts.

  Requests training left queued in the background are dropped first, so
  that they do not hold up evaluation's own (plans are asked again when
  training meets them again; lessons are lost, and counted in training's
  `reflections_dropped`). An LLM planner's waiting is bounded per
  evaluation (`Planner.evaluation_wait_s`). The planner counts returned are
  this evaluation's alone. Evaluation's own background requests end with
  it (its worker stops after the batch in flight), so that they neither
  compete with training for the model nor outlive the evaluation
  uncounted.
  """
  if isinstance(train_env, PLANNED_ENVIRONMENTS):
    train_env.planner.close()
  llm = getattr(eval_env, "planner", None)
  if isinstance(llm, Planner):
    llm.start_wait_budget()
  before = planner_counts(eval_env)
  exposure = evaluation.ExposureCurve()
  try:
    values = evaluation.evaluate_sessions(eval_env, policy, exposure)
  finally:
    if isinstance(llm, Planner):
      llm.close()
  summary: dict[str, Any] = metrics.summarise(values)
  summary["exposure_curve"] = exposure.to_dict()
  summary["planner"] = counts_delta(planner_counts(eval_env), before)
  return summary


def run_evaluation(train_env, eval_env,
                   policies: Mapping[str, py_policy.PyPolicy], eval_writer,
                   iteration, directory, user_steps: int | None = None
                   ) -> dict[str, dict[str, Any]]:
  """Evaluates each policy on the same fresh users; returns their
  `evaluate_policy` summaries by key.

  Records TensorBoard scalars (an extra policy's under "KEY/"), one history
  line (`MAIN`'s results at its top level, an extra's under its key; no
  exposure curves).
  """
  step = int(iteration.numpy())
  results = {key: evaluate_policy(eval_env, policy, train_env)
             for key, policy in policies.items()}
  history: dict[str, Any] = {"iteration": step}
  if user_steps is not None:
    history["user_steps"] = user_steps
  for key, summary in results.items():
    main = key == MAIN
    with eval_writer.as_default(step=step):
      for name in metrics.EPISODE_METRICS:
        tf.summary.scalar(name if main else f"{key}/{name}",
                          summary[name]["mean"])
    logging.info("%sevaluation at iteration %d: cumulative reward %.2f ± "
                 "%.2f, interaction length %.1f ± %.1f over %d sessions",
                 "" if main else f"{key} ", step,
                 summary["cumulative_reward"]["mean"],
                 summary["cumulative_reward"]["ci95"],
                 summary["interaction_length"]["mean"],
                 summary["interaction_length"]["ci95"],
                 summary["num_sessions"])
    recorded = {name: value for name, value in summary.items()
                if name != "exposure_curve"}
    if main:
      history.update(recorded)
    else:
      history[key] = recorded
  directory.eval.mkdir(parents=True, exist_ok=True)
  with directory.eval_history.open("a") as stream:
    stream.write(json.dumps(history) + "\n")
  return results


def save_checkpoint(checkpointer: common.Checkpointer, iteration: tf.Variable,
                    train_env: Any, directory: RunDirectory) -> None:
  """Saves the checkpoint and the reflection pool. If writing fails (a full
  disk), the previous checkpoint stays the latest and intact, and the run
  stops with a CheckpointError saying how to resume."""
  try:
    if hasattr(train_env, "saved_state"):
      results.write_json_atomic(directory.environment_state, {
          "iteration": int(iteration.numpy()),
          "state": train_env.saved_state()})
    checkpointer.save(global_step=iteration)
    save_reflections(train_env, directory)
  except (tf.errors.OpError, OSError) as error:
    message = getattr(error, "message", None) or str(error)
    raise CheckpointError(
        f"could not write a checkpoint in {directory.checkpoints} "
        f"({type(error).__name__}: {message.splitlines()[0]}); the previous "
        "checkpoint is intact: free disk space and rerun the same command "
        "to resume from it") from None


def load_environment_state(train_env: Any, directory: RunDirectory,
                           iteration: int) -> None:
  """Restores what the checkpoint of `iteration` could not hold of the
  training environment (the planner's state), saved beside it."""
  if not hasattr(train_env, "load_saved_state"):
    return
  remedy = ("remove it and the checkpoints beside it to start the run over, "
            "or choose another --root_dir")
  saved = (results.read_json(directory.environment_state, remedy)
           if directory.environment_state.exists() else None)
  if saved is None or saved.get("iteration") != iteration:
    if uses_llm(train_env):
      logging.warning(
          "%s holds no planner state for iteration %d; the resumed run's "
          "planner starts afresh", directory.environment_state, iteration)
    return
  train_env.load_saved_state(saved["state"])


def save_reflections(env: py_environment.PyEnvironment,
                     directory: RunDirectory) -> None:
  pool = reflection_pool(env)
  if pool is not None:
    pool.save(directory.reflections)


def reflection_pool(env: Any) -> Any:
  if not isinstance(env, PLANNED_ENVIRONMENTS):
    return None
  return getattr(env.planner, "reflections", None)
