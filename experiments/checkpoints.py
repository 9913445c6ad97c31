"""A run's directory, its checkpoints and what is saved beside them.

The checkpoint holds the learner (agent, replay buffer, draws), the iteration
and the training user-steps; the planner's state and reflection pool, which
TensorFlow cannot hold, are written beside it.
"""

from __future__ import annotations

import pathlib
from typing import Any

import tensorflow as tf
from absl import logging
from tf_agents.environments import py_environment
from tf_agents.utils import common

from lerl_recsim import results
from lerl_recsim.experiments.planner_counts import reflection_pool, uses_llm


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


class CheckpointError(RuntimeError):
  """A run's checkpoint exists but cannot be restored."""


def checkpointed_iteration(directory: RunDirectory) -> int:
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


def restore(checkpointer: common.Checkpointer, iteration: tf.Variable,
            train_env: Any, directory: RunDirectory) -> None:
  """Restores the latest checkpoint, if any, and the training environment's
  state saved beside it; CheckpointError if the checkpoint is unreadable."""
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
