"""The planning oracle's search: simulated futures are the simulator's own."""

from __future__ import annotations

import lerl_recsim  # first: Keras 2 for TF-Agents
import numpy as np
import pytest
from scipy import stats
from tf_agents.trajectories import time_step as ts

from lerl_recsim import environment as environment_lib
from lerl_recsim import evaluation, lookahead
from lerl_recsim.agents import scripted_policies

USERS, ITEMS = 8, 60


def stepped_env(seed: int = 3) -> environment_lib.RecSimEnvironment:
  """An environment two random steps into its sessions."""
  env = lerl_recsim.make_env(num_users=USERS, seed=seed, num_items=ITEMS)
  env.reset()
  rng = np.random.default_rng(seed)
  for _ in range(2):
    env.step(rng.integers(0, ITEMS, USERS).astype(np.int32))
  return env


def greedy_items(env: environment_lib.RecSimEnvironment) -> np.ndarray:
  return env.expected_engagement().argmax(axis=1).astype(np.int32)


def fresh_greedy_items(env: environment_lib.RecSimEnvironment,
                       history: list[np.ndarray], window: int) -> np.ndarray:
  """By hand: the most engaging item sharing no category with the items of
  the last `window` steps in `history` (greedy where none is left)."""
  categories = env.scenario.items.categories > 0
  expected = env.expected_engagement()
  items = np.empty(USERS, np.int32)
  for u in range(USERS):
    stale = np.zeros(categories.shape[1], bool)
    for served in history[-window:]:
      stale |= categories[served[u]]
    fresh = ~(categories & stale).any(axis=1)
    scores = np.where(fresh, expected[u], -1.0) if fresh.any() else expected[u]
    items[u] = scores.argmax()
  return items


@pytest.mark.parametrize("continuation", lookahead.CONTINUATIONS)
def test_one_branch_future_is_the_environments_own_trajectory(continuation):
  env = stepped_env()
  window = 2
  search = lookahead.Lookahead(env.scenario, num_candidates=1,
                               settings=lookahead.SearchSettings(
                                   horizon=4, samples=1, fresh_window=window,
                                   continuations=(continuation,)))
  first = greedy_items(env)
  futures = search.futures(env._simulator.hidden_state(), first[:, None],
                           env.next_step_seed())
  futures = {name: value.numpy()[:, :, 0, 0] for name, value in futures.items()}
  # The two random steps of `stepped_env` (same seed) start the history.
  rng = np.random.default_rng(3)
  history = [rng.integers(0, ITEMS, USERS) for _ in range(2)]
  rewards, types, actions = [], [], []
  for step in range(4):
    action = (first if step == 0 else greedy_items(env)
              if continuation == "greedy"
              else fresh_greedy_items(env, history, window))
    time_step = env.step(action)
    history.append(action)
    actions.append(action)
    rewards.append(time_step.reward)
    types.append(time_step.step_type)
  rewards, types, actions = map(np.array, (rewards, types, actions))
  # Up to and including each user's last step (the environment then swaps
  # in a new user; the search keeps the one that left).
  alive = np.cumprod(types != ts.StepType.LAST, axis=0)
  until_left = np.vstack([np.ones((1, USERS), bool), alive[:-1] > 0])
  assert until_left.sum() > USERS  # the comparison covers several steps
  np.testing.assert_array_equal(futures["action"][until_left],
                                actions[until_left])
  np.testing.assert_array_equal(futures["step_type"][until_left],
                                types[until_left])
  np.testing.assert_allclose(futures["reward"][until_left],
                             rewards[until_left], rtol=1e-6)
  if continuation == "fresh_greedy":  # it differs from greedy somewhere
    assert (actions[1:] != np.array([greedy_items(env)] * 3)).any()


def test_value_is_the_best_continuations_expected_engagement_until_leaving():
  env = stepped_env(seed=4)
  settings = lookahead.SearchSettings(horizon=3, samples=2)
  assert settings.continuations == ("greedy", "fresh_greedy")
  search = lookahead.Lookahead(env.scenario, num_candidates=2,
                               settings=settings)
  first = np.stack([greedy_items(env), np.zeros(USERS, np.int32)], axis=1)
  state, seed = env._simulator.hidden_state(), env.next_step_seed()
  values = search.values(state, first, seed).numpy()
  futures = {k: v.numpy() for k, v in search.futures(state, first, seed).items()}
  assert values.shape == (USERS, 2)
  assert futures["action"].shape == (3, USERS, 2, 4)
  # By hand: sum expected engagement while no earlier step was LAST,
  # average each continuation's 2 samples, keep the better continuation.
  by_hand = np.zeros((USERS, 2))
  for u in range(USERS):
    for c in range(2):
      means = [0.0, 0.0]
      for branch in range(4):
        for h in range(3):
          means[branch // 2] += futures["expected_reward"][h, u, c, branch] / 2
          if futures["step_type"][h, u, c, branch] == ts.StepType.LAST:
            break
      by_hand[u, c] = max(means)
  np.testing.assert_allclose(values, by_hand, rtol=1e-5)
  # The first expected reward is the environment's own expectation.
  np.testing.assert_allclose(
      futures["expected_reward"][0, :, :, 0],
      np.take_along_axis(env.expected_engagement(), first, axis=1), rtol=1e-5)


def test_search_leaves_the_real_users_untouched():
  env = stepped_env(seed=5)
  before = {name: {field: value.numpy() for field, value in fields.items()}
            for name, fields in env._simulator.hidden_state().items()}
  policy = scripted_policies.PlanningOraclePolicy(env, seed=0)
  policy.action(env.current_time_step())
  after = env._simulator.hidden_state()
  for name, fields in before.items():
    for field, value in fields.items():
      np.testing.assert_array_equal(after[name][field].numpy(), value)


def test_hidden_state_stays_out_of_what_agents_see():
  env = stepped_env()
  names = {"item_history", "click_history", "response_history",
           "category_counts", "category_engagement", "session_length",
           "mean_engagement"}
  assert set(env.observation_spec()["observation"]) == names
  assert set(env.current_time_step().observation["observation"]) == names
  # The search needs the environment object and its hidden state; a policy
  # built from specs alone (as TF-Agents agents are) has neither.
  with pytest.raises(AttributeError):
    scripted_policies.PlanningOraclePolicy(env.time_step_spec())


@pytest.mark.parametrize("changes, message", [
    ({"horizon": 0}, "horizon must be an int >= 1, got 0"),
    ({"samples": 1.5}, "samples must be an int >= 1, got 1.5"),
    ({"continuations": ("random",)}, r"continuations must be a non-empty "
     r"tuple of distinct names from \('greedy', 'fresh_greedy'\), got "
     r"\('random',\)"),
    ({"continuations": ()}, "got \\(\\)"),
    ({"candidates": 0}, r"candidates must be None or an int >= 1, got 0"),
])
def test_bad_settings_are_named(changes, message):
  with pytest.raises(ValueError, match=message):
    lookahead.SearchSettings(**changes)


def test_candidates_alternate_best_and_best_fresh_items_of_categories():
  env = stepped_env(seed=6)
  policy = scripted_policies.PlanningOraclePolicy(
      env, seed=0, settings=lookahead.SearchSettings(candidates=5,
                                                     fresh_window=2))
  observation, mask = environment_lib.splitter(
      env.current_time_step().observation)
  mask = mask.copy()
  mask[:, ::7] = False  # some items are not allowed
  expected = env.expected_engagement()
  chosen = policy.candidates(observation, mask, expected)
  categories = env.scenario.items.categories > 0
  recent = observation["item_history"][:, -2:].reshape(USERS, -1)
  for u in range(USERS):
    stale = categories[recent[u][recent[u] >= 0]].any(axis=0)
    fresh = ~(categories & stale).any(axis=1)
    lists = []
    for allowed in (mask[u], mask[u] & fresh):
      best = {}  # category -> (engagement, item) of its best allowed item
      for item in np.flatnonzero(allowed):
        for category in np.flatnonzero(categories[item]):
          best[category] = max(best.get(category, (-1.0, -1)),
                               (expected[u, item], item))
      lists.append([item for _, item in sorted(best.values(), reverse=True)])
    by_hand = []
    for pair in zip(*lists):
      for item in pair:
        if item not in by_hand:
          by_hand.append(item)
    assert chosen[u].tolist() == by_hand[:5]
  assert chosen.min() >= 0 and (chosen >= 0).all()


def test_planning_oracle_serves_one_of_its_candidates():
  env = stepped_env(seed=7)
  policy = scripted_policies.PlanningOraclePolicy(
      env, seed=0, settings=lookahead.SearchSettings(candidates=3))
  time_step = env.current_time_step()
  observation, mask = environment_lib.splitter(time_step.observation)
  chosen = policy.candidates(observation, mask, env.expected_engagement())
  action = policy.action(time_step).action
  assert all(action[u] in chosen[u] for u in range(USERS))


def test_slates_are_refused():
  env = lerl_recsim.make_env(num_users=2, seed=0, num_items=40, slate_size=3)
  with pytest.raises(ValueError, match="slate_size=3 is not supported"):
    lookahead.Lookahead(env.scenario, num_candidates=20)


def test_planning_oracle_keeps_users_longer_than_the_greedy_oracle():
  # 64 users, satisfaction: the greedy oracle serves the most engaging item
  # until repetition drives users away; the search sees that coming.
  results = {}
  for name in ("oracle", "planning_oracle"):
    env = lerl_recsim.make_env(num_users=64, seed=11, num_items=100)
    policy = scripted_policies.SCRIPTED_POLICIES[name](env, seed=11)
    results[name] = evaluation.evaluate_sessions(env, policy)
  greedy, planning = (results[n]["cumulative_reward"]
                      for n in ("oracle", "planning_oracle"))
  # Welch's t on 64 sessions each: the planning oracle is higher.
  assert planning.mean() > greedy.mean()
  assert stats.ttest_ind(planning, greedy, equal_var=False,
                         alternative="greater").pvalue < 0.05
