"""Random draws that a checkpoint holds.

TensorFlow's stateful random ops keep their place in the op kernel, which no
checkpoint saves: a run resumed from a checkpoint would explore, and sample
its replay buffer, differently from the run it continues. A learner's draws
are therefore stateless ops keyed on (seed, count), and `Draws` keeps both
in variables that the learner checkpoints, so a resumed run draws exactly
what the uninterrupted run would have.
"""

from __future__ import annotations

import tensorflow as tf
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.trajectories import trajectory as trajectory_lib


class Draws(tf.Module):
  """The source of a learner's stateless random keys.

  The seed is drawn once from TensorFlow's global seed (which the runner
  sets from the run's seed), then kept with the count in the checkpoint.
  """

  def __init__(self) -> None:
    super().__init__(name="draws")
    seed = tf.random.uniform([], 0, 2**31 - 1, dtype=tf.int64)
    self.seed = tf.Variable(seed, name="seed")
    self.count = tf.Variable(tf.constant(0, tf.int64), name="count")

  def key(self) -> tf.Tensor:
    """A new int64 [2] seed for a stateless op, one per call (in a graph:
    one per execution of the call)."""
    return tf.stack([self.seed.read_value(), self.count.assign_add(1)])


def split(key: tf.Tensor, num: int) -> tf.Tensor:
  """`num` independent int64 [2] keys from one (rows of the result)."""
  return tf.random.experimental.stateless_split(key, num)


def sample_sequences(buffer: tf_uniform_replay_buffer.TFUniformReplayBuffer,
                     key: tf.Tensor, batch_size: int, num_steps: int
                     ) -> trajectory_lib.Trajectory:
  """`batch_size` sequences of `num_steps` consecutive items, [B, T, ...],
  each from a uniformly drawn user slot and stored start: what
  `buffer.get_next(batch_size, num_steps)[0]` samples, with draws keyed on
  `key`."""
  low, high = tf_uniform_replay_buffer._valid_range_ids(  # pylint: disable=protected-access
      buffer._get_last_id(), buffer._max_length, num_steps)
  start_key, slot_key = tf.unstack(split(key, 2))
  starts = tf.random.stateless_uniform([batch_size], start_key, minval=low,
                                       maxval=high, dtype=tf.int64)
  slots = tf.random.stateless_uniform([batch_size], slot_key, minval=0,
                                      maxval=buffer._batch_size,
                                      dtype=tf.int64)
  positions = (starts[:, None] + tf.range(num_steps, dtype=tf.int64)
               ) % buffer._max_length
  return buffer._data_table.read(positions + slots[:, None] * buffer._max_length)
