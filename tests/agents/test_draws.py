"""Stateless draws a checkpoint holds: keys and replay sampling."""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
from tf_agents.replay_buffers import tf_uniform_replay_buffer

from lerl_recsim.agents.draws import Draws, sample_sequences


def test_keys_are_new_each_call_and_a_restored_source_continues_them(tmp_path):
  tf.random.set_seed(0)
  draws = Draws()
  first = [tuple(draws.key().numpy()) for _ in range(3)]
  assert len(set(first)) == 3 and first[0][1] == 1
  tf.train.Checkpoint(draws=draws).save(str(tmp_path / "ckpt"))
  expected = [tuple(draws.key().numpy()) for _ in range(3)]
  tf.random.set_seed(1)  # another seed: the checkpoint's must win
  restored = Draws()
  tf.train.Checkpoint(draws=restored).restore(
      tf.train.latest_checkpoint(str(tmp_path))).assert_consumed()
  assert [tuple(restored.key().numpy()) for _ in range(3)] == expected


def test_sampled_sequences_are_stored_consecutive_steps_drawn_uniformly():
  slots, max_length, steps = 3, 6, 10
  buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
      tf.TensorSpec([], tf.int64), batch_size=slots, max_length=max_length)
  for step in range(steps):  # value: slot * 1000 + step
    buffer.add_batch(tf.constant([s * 1000 + step for s in range(slots)],
                                 tf.int64))
  draws = Draws()
  sampled = np.concatenate([
      sample_sequences(buffer, draws.key(), 300, 2).numpy()
      for _ in range(10)])
  slot, start = sampled[:, 0] // 1000, sampled[:, 0] % 1000
  # Two consecutive steps of one slot, among the last 6 stored (4..9).
  assert (sampled[:, 1] == sampled[:, 0] + 1).all()
  assert set(start) == {4, 5, 6, 7, 8}
  # 15 (slot, start) cells, 200 draws expected in each.
  counts = collections.Counter(zip(slot.tolist(), start.tolist()))
  assert len(counts) == 15
  assert all(140 <= n <= 260 for n in counts.values()), counts
  again = sample_sequences(buffer, tf.constant([7, 7], tf.int64), 50, 2)
  assert (again.numpy() == sample_sequences(
      buffer, tf.constant([7, 7], tf.int64), 50, 2).numpy()).all()
