"""The learners' parts: checkpointed draws, replay sampling, collection
counts, and the iteration of the off- and on-policy learners."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory as trajectory_lib

import lerl_recsim
from lerl_recsim import planner_environment, tf_environment
from lerl_recsim.agents import dqn, learners, ppo
from lerl_recsim.agents.draws import Draws, sample_sequences
from lerl_recsim.planner import Planner
from lerl_recsim.scenarios.catalogue import default_catalogue
from tests.conftest import SMALL_PLANS, PromptHashChatModel

USERS = 3


def test_draws_continue_from_a_checkpoint(tmp_path):
  tf.random.set_seed(0)
  draws = Draws()
  seed = int(draws.seed.numpy())
  assert [draws.key().numpy().tolist() for _ in range(3)] == [
      [seed, 1], [seed, 2], [seed, 3]]
  path = tf.train.Checkpoint(draws=draws).save(str(tmp_path / "ckpt"))
  tf.random.set_seed(99)
  restored = Draws()
  tf.train.Checkpoint(draws=restored).restore(path).assert_consumed()
  assert restored.key().numpy().tolist() == draws.key().numpy().tolist() == [
      seed, 4]


def filled_buffer(steps: int, max_length: int
                  ) -> tf_uniform_replay_buffer.TFUniformReplayBuffer:
  """A buffer of USERS slots whose item at (slot, step t) is 100 * slot + t."""
  buffer = tf_uniform_replay_buffer.TFUniformReplayBuffer(
      tf.TensorSpec([], tf.int64), batch_size=USERS, max_length=max_length)
  for t in range(steps):
    buffer.add_batch(tf.constant([100 * slot + t for slot in range(USERS)],
                                 tf.int64))
  return buffer


def test_sampled_sequences_are_consecutive_steps_of_one_slot():
  # 9 steps into room for 5: steps 4-8 are kept, so pairs start at 4-7.
  buffer = filled_buffer(steps=9, max_length=5)
  tf.random.set_seed(0)
  draws = Draws()
  samples = np.concatenate([sample_sequences(buffer, draws.key(), 200, 2)
                            .numpy() for _ in range(15)])
  slots, starts = samples[:, 0] // 100, samples[:, 0] % 100
  np.testing.assert_array_equal(samples[:, 1], samples[:, 0] + 1)
  assert set(starts) == {4, 5, 6, 7}
  # 3,000 draws: uniform over slots and over the valid starts.
  assert stats.chisquare(np.bincount(slots, minlength=USERS)).pvalue > 1e-3
  assert stats.chisquare(np.bincount(starts)[4:]).pvalue > 1e-3


def test_equal_keys_sample_equal_sequences():
  buffer = filled_buffer(steps=6, max_length=10)
  key = tf.constant([3, 8], tf.int64)
  first = sample_sequences(buffer, key, 16, 3).numpy()
  np.testing.assert_array_equal(first, sample_sequences(buffer, key, 16, 3))
  assert not np.array_equal(
      first, sample_sequences(buffer, tf.constant([3, 9], tf.int64), 16, 3))


def test_boundary_transitions_are_dropped():
  # Rows: a mid-session step, a session's last step (its action, taken on
  # the next session's first observation, was ignored), a first step.
  step_type = tf.constant([[ts.StepType.MID], [ts.StepType.LAST],
                           [ts.StepType.FIRST]])
  experience = trajectory_lib.Trajectory(
      step_type=step_type, observation=tf.constant([[10], [11], [12]]),
      action=tf.constant([[0], [1], [2]]), policy_info=(),
      next_step_type=tf.constant([[ts.StepType.MID], [ts.StepType.FIRST],
                                  [ts.StepType.MID]]),
      reward=tf.zeros([3, 1]), discount=tf.ones([3, 1]))
  kept = learners.drop_boundaries(experience)
  assert kept.observation.numpy().ravel().tolist() == [10, 12]


def small_env(tf_native: bool = False):
  if tf_native:
    return tf_environment.make_tf_env(num_users=USERS, num_items=40, seed=0)
  return lerl_recsim.make_env(num_users=USERS, num_items=40, seed=0)


DQN_OPTIONS = dqn.Hyperparameters(
    fc_layer_params=(16,), learning_rate=1e-3, target_update_period=10,
    replay_capacity=300, batch_size=8, collect_steps_per_iteration=2,
    train_steps_per_iteration=3, initial_collect_steps=5)


@pytest.mark.parametrize("tf_native", [False, True])
def test_off_policy_iterations_collect_then_train(tf_native):
  tf.random.set_seed(0)
  learner = dqn.build_learner(small_env(tf_native), DQN_OPTIONS)
  counter = learner.agent.train_step_counter
  learner.run_iteration()
  # First the initial 5 steps, then 2 per iteration, of each of 3 users.
  assert learner.user_steps == (5 + 2) * USERS
  assert learner.replay_buffer.num_frames().numpy() == (5 + 2) * USERS
  assert counter.numpy() == 3
  result = learner.run_iteration()
  assert learner.user_steps == (5 + 2 + 2) * USERS
  assert counter.numpy() == 6 and np.isfinite(result["loss"])


def counting_follow_up(buffer):
  """A follow-up that counts its calls and returns the frames it sees when
  it prepares and when it finishes."""
  calls = tf.Variable(0)

  def finish(frames_before):
    calls.assign_add(1)
    return frames_before, buffer.num_frames()

  return learners.FollowUp(finish, prepare=buffer.num_frames), calls


@pytest.mark.parametrize("env", [
    small_env, lambda: small_env(tf_native=True),
    # Waiting for LLM plans: collection runs one step per graph call.
    lambda: tf_environment.make_planned_tf_env(
        planner=Planner(PromptHashChatModel(), default_catalogue(),
                        rules=SMALL_PLANS,
                        prompt_config=planner_environment.SCENARIO_PROMPT_CONFIG),
        replan_every=1, num_users=USERS, num_items=40, seed=0)],
    ids=["python", "graph", "graph-one-step-per-call"])
def test_a_collections_follow_up_prepares_before_and_finishes_after_its_steps(
    env):
  env = env()
  learner = dqn.build_learner(env, DQN_OPTIONS)
  follow_up, calls = counting_follow_up(learner.replay_buffer)
  assert learner._collector.run(2) is None
  before, after = learner._collector.run(3, follow_up)
  assert (int(before), int(after)) == (2 * USERS, 5 * USERS)
  assert int(calls.numpy()) == 1
  assert learner._collector.run(1) is None
  assert learner.replay_buffer.num_frames().numpy() == 6 * USERS
  assert int(calls.numpy()) == 1


def test_on_policy_iterations_train_once_on_a_fresh_batch():
  tf.random.set_seed(0)
  env = small_env()
  learner = ppo.build_learner(env, ppo.Hyperparameters(
      fc_layer_params=(16,), learning_rate=1e-3, num_epochs=2,
      collect_steps_per_iteration=4))
  for iteration in (1, 2):
    result = learner.run_iteration()
    assert learner.user_steps == 4 * USERS * iteration
    assert learner._buffer.num_frames().numpy() == 0  # used once, cleared
    assert np.isfinite(result["loss"])
  assert set(learner.extra_evaluation_policies(seed=0)) == {"sampled"}
