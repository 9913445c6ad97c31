"""The TF-Agents environment contract, per-user episodes and bad input."""

import numpy as np
import pytest
from tf_agents.environments import utils as env_utils
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

import lerl_recsim
from lerl_recsim import environment as environment_lib
from lerl_recsim import metrics as metrics_lib
from lerl_recsim.scenarios import story


def small_env(**overrides):
  options = dict(num_users=8, seed=7, num_items=60)
  options.update(overrides)
  return lerl_recsim.make_env(**options)


def random_actions(env, rng):
  k = env.scenario.slate_size
  n = env.scenario.items.num_items
  if k == 1:
    return rng.integers(0, n, env.batch_size).astype(np.int32)
  return np.stack([rng.choice(n, k, replace=False)
                   for _ in range(env.batch_size)]).astype(np.int32)


@pytest.mark.parametrize("overrides", [
    {}, {"exit_rule": "temper"}, {"exit_rule": "budget", "max_session_length": 12},
    {"exit_rule": "category_window", "exit_params": {"preset": "easyrl4rec"}},
])
def test_passes_validate_py_environment_with_splitter(overrides):
  env = small_env(**overrides)
  env_utils.validate_py_environment(
      env, episodes=10,
      observation_and_action_constraint_splitter=lerl_recsim.splitter)


def test_slates_follow_the_specs_and_keep_items_distinct():
  # validate_py_environment's random policy may repeat an item inside a
  # slate, which the environment rejects; the same check with distinct items:
  env = small_env(slate_size=3, exit_rule="kuaisim")
  assert env.action_spec().shape == (3,)
  batched_spec = array_spec.add_outer_dims_nest(env.time_step_spec(), (8,))
  rng = np.random.default_rng(0)
  time_step = env.reset()
  ended = 0
  while ended < 10:
    assert array_spec.check_arrays_nest(time_step, batched_spec)
    time_step = env.step(random_actions(env, rng))
    ended += time_step.is_last().sum()
  env.reset()
  with pytest.raises(ValueError, match=r"slot 2 .*repeated items \[4, 9, 4\]"):
    actions = random_actions(env, np.random.default_rng(0))
    actions[2] = [4, 9, 4]
    env.step(actions)


def test_same_seed_same_trajectories_and_other_seed_differs():
  def rollout(seed):
    env = small_env(seed=seed)
    rng = np.random.default_rng(0)
    steps = [env.reset()]
    for _ in range(40):
      steps.append(env.step(random_actions(env, rng)))
    return steps

  first, second, other = rollout(7), rollout(7), rollout(8)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a.step_type, b.step_type)
    np.testing.assert_array_equal(a.reward, b.reward)
    np.testing.assert_array_equal(a.observation["observation"]["item_history"],
                                  b.observation["observation"]["item_history"])
  assert any(not np.array_equal(a.reward, b.reward)
             for a, b in zip(first, other))


def test_departed_slot_restarts_while_others_continue():
  env = small_env(exit_rule="temper", exit_params={"initial_temper": 3.0})
  rng = np.random.default_rng(1)
  time_step = env.reset()
  lengths = time_step.observation["observation"]["session_length"]
  saw_restart = False
  for _ in range(30):
    previous = time_step
    time_step = env.step(random_actions(env, rng))
    length = time_step.observation["observation"]["session_length"]
    restarted = previous.is_last()
    if restarted.any():
      saw_restart = True
      assert np.all(time_step.step_type[restarted] == ts.StepType.FIRST)
      assert np.all(time_step.reward[restarted] == 0.0)
      assert np.all(length[restarted] == 0)
      assert np.all(time_step.observation["observation"]["item_history"][restarted] == -1)
    continuing = ~restarted
    np.testing.assert_array_equal(length[continuing], lengths[continuing] + 1)
    lengths = length
  assert saw_restart


def test_departure_discounts_zero_and_truncation_keeps_discount():
  # temper 3 and cap 2: with repeats a user leaves at step 2 (3 - 1 - 2 < 1);
  # without repeats (different categories) temper is 1 at step 2: truncated.
  env = small_env(num_users=2, exit_rule="temper",
                  exit_params={"initial_temper": 3.0}, max_session_length=2)
  category = env.scenario.items.primary_category
  first = np.flatnonzero(category == 0)[:2]
  other = np.flatnonzero(category == 5)[0]
  env.reset()
  env.step(np.array([first[0], first[0]], np.int32))
  last = env.step(np.array([first[1], other], np.int32))
  assert list(last.step_type) == [ts.StepType.LAST, ts.StepType.LAST]
  assert list(last.discount) == [0.0, 1.0]


def test_episode_metrics_match_the_trajectory():
  env = small_env(num_users=4)
  rng = np.random.default_rng(3)
  categories = env.scenario.items.primary_category
  time_step = env.reset()
  rewards = [[] for _ in range(4)]
  shown = [[] for _ in range(4)]
  expected = []
  for _ in range(200):
    actions = random_actions(env, rng)
    was_last = time_step.is_last()
    time_step = env.step(actions)
    for slot in range(4):
      if was_last[slot]:
        continue
      rewards[slot].append(time_step.reward[slot])
      shown[slot].append(categories[actions[slot]])
      if time_step.is_last()[slot]:
        cats = np.array(shown[slot])
        counts = np.bincount(cats, minlength=20)
        expected.append((slot, sum(rewards[slot]), len(cats),
                         len(set(cats)), np.mean(cats[1:] == cats[:-1]) if len(cats) > 1 else 0.0,
                         counts.max() / len(cats)))
        rewards[slot], shown[slot] = [], []
  values = env.episode_metrics.values()
  assert len(expected) == env.episode_metrics.num_sessions > 5
  for i, (slot, total, length, coverage, repetition, majority) in enumerate(expected):
    assert values["slot"][i] == slot
    assert values["cumulative_reward"][i] == pytest.approx(total, rel=1e-5)
    assert values["interaction_length"][i] == length
    assert values["step_reward"][i] == pytest.approx(total / length, rel=1e-5)
    assert values["category_coverage"][i] == coverage
    assert values["repetition_rate"][i] == pytest.approx(repetition)
    assert values["majority_category_share"][i] == pytest.approx(majority)


def test_observation_never_holds_hidden_state():
  env = small_env()
  observed = set(env.observation_spec()["observation"])
  assert observed == set(
      ["item_history", "click_history", "response_history", "category_counts",
       "category_engagement", "session_length", "mean_engagement"])
  assert not observed & {"interest", "satiation", "patience", "temper"}


def test_mask_is_all_true_and_splitter_splits():
  env = small_env()
  time_step = env.reset()
  observation, mask = lerl_recsim.splitter(time_step.observation)
  assert mask.shape == (8, 60) and mask.all()
  assert "item_history" in observation


@pytest.mark.parametrize("make_actions, error, message", [
    (lambda a: a.astype(np.float32), TypeError, "integer item indices"),
    (lambda a: a[:5], ValueError, r"shape \(5,\); expected \(8,\)"),
    (lambda a: np.where(np.arange(8) == 3, 60, a), ValueError,
     r"slot 3 recommends item 60, outside \[0, 59\]"),
    (lambda a: np.where(np.arange(8) == 6, -2, a), ValueError,
     r"slot 6 recommends item -2"),
])
def test_bad_actions_name_slot_and_item(make_actions, error, message):
  env = small_env()
  env.reset()
  actions = random_actions(env, np.random.default_rng(0))
  with pytest.raises(error, match=message):
    env.step(make_actions(actions))


def test_masked_action_is_rejected_not_clipped():
  mask = np.ones((3, 10), bool)
  mask[1, 4] = False
  with pytest.raises(ValueError, match="slot 1 recommends item 4, which its mask excludes"):
    environment_lib.check_actions(np.array([4, 4, 4]), mask, np.ones(3, bool), 10, 1)
  # A slot that is restarting ignores its action, so it is not checked.
  active = np.array([True, False, True])
  slates = environment_lib.check_actions(np.array([4, 4, 4]), mask, active, 10, 1)
  assert slates.shape == (3, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"scenario": "kuairec"}, "unknown scenario 'kuairec'; accepted: \\['interest_evolution', 'movielens', 'ratings_csv'\\]"),
    ({"exit_rule": "boredom"}, "unknown exit rule 'boredom'"),
    ({"satiation_decay": 1.5}, "satiation_decay=1.5 is out of range"),
    ({"satiation_decay": "slow"}, "satiation_decay must be a number"),
    ({"num_items": 0}, "num_items=0 is out of range"),
    ({"num_items": 10}, "num_items=10 is smaller than the 20 categories"),
    ({"slate_size": 2.0}, "slate_size must be an int"),
    ({"num_users": 0}, "num_users must be an int >= 1"),
    ({"colour": "blue"}, "unknown scenario override 'colour'"),
    ({"max_session_length": 0}, "max_session_length must be an int >= 1"),
    ({"seed": 1.5}, "seed must be an int"),
])
def test_bad_configuration_is_named(kwargs, message):
  with pytest.raises((ValueError, TypeError), match=message):
    lerl_recsim.make_env(**kwargs)


def test_resolved_configuration_is_complete():
  env = small_env(exit_rule="category_window", exit_params={"preset": "dorl"})
  config = env.config
  assert config["exit_rule"] == "category_window"
  assert config["max_session_length"] == 30
  assert config["exit_params"] == {"window": 4, "threshold": 0}
  assert config["user_params"]["satiation_decay"] == 0.8
  assert config["seed"] == 7 and config["num_users"] == 8


def test_session_metrics_on_a_hand_made_history():
  history = {
      "total_engagement": np.array([3.0]),
      "session_length": np.array([4]),
      "category_counts": np.array([[3.0, 1.0] + [0.0] * 18]),
      "repeats": np.array([2.0]),
  }
  values = metrics_lib.session_metrics(history)
  assert values["step_reward"][0] == 0.75
  assert values["category_coverage"][0] == 2
  assert values["repetition_rate"][0] == pytest.approx(2 / 3)
  assert values["majority_category_share"][0] == 0.75


def test_ci95_uses_student_t():
  summary = metrics_lib.mean_and_ci95(np.array([1.0, 2.0, 3.0]))
  # t(0.975, 2) = 4.3027; std = 1; n = 3.
  assert summary["mean"] == 2.0
  assert summary["ci95"] == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)


def test_variables_match_the_story():
  env = small_env()
  assert {v.name for v in env.scenario.network.variables} == {
      story.CORPUS, story.SLATE_REQUEST, story.SLATE_DOCS, story.USER_STATE,
      story.USER_RESPONSE, story.EXIT_STATE, story.HISTORY}
