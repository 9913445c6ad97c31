"""The default scenario shows the trade-off the project exists for."""

import numpy as np
import pytest
from scipy import stats

import lerl_recsim
from lerl_recsim import evaluation, slates
from lerl_recsim.agents import scripted_policies
from lerl_recsim.experiments import sanity


# The policies that show the scenario's trade-off (the planning oracle's
# own checks are in test_lookahead.py).
SCENARIO_CHECKS = ("random", "best_category", "diversifying", "oracle")


@pytest.fixture(scope="module")
def default_results():
  env = lerl_recsim.make_env(num_users=400, seed=11)
  return {name: evaluation.evaluate_sessions(
      env, scripted_policies.SCRIPTED_POLICIES[name](env, seed=11))
          for name in SCENARIO_CHECKS}


def welch_p(a, b):
  return stats.ttest_ind(a, b, equal_var=False).pvalue


def test_best_category_earns_more_per_step_than_random(default_results):
  best_category = default_results["best_category"]["step_reward"]
  random = default_results["random"]["step_reward"]
  assert best_category.mean() > random.mean()
  assert welch_p(best_category, random) < 1e-3


def test_best_category_loses_users_sooner_than_diversifying(default_results):
  best_category = default_results["best_category"]["interaction_length"]
  diverse = default_results["diversifying"]["interaction_length"]
  assert diverse.mean() > 1.5 * best_category.mean()
  assert welch_p(diverse, best_category) < 1e-6


def test_best_category_narrows_to_few_categories(default_results):
  assert (default_results["best_category"]["majority_category_share"].mean() >
          2 * default_results["diversifying"]["majority_category_share"].mean())


def test_every_slot_counts_once(default_results):
  assert all(len(v["cumulative_reward"]) == 400 for v in default_results.values())


def test_masked_top_k_never_picks_excluded_items():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(500, 30))
  mask = rng.random((500, 30)) < 0.3
  mask[:, 0] = mask[:, 1] = True
  scores[~mask] = 1e9  # excluded items score highest and still lose
  chosen = slates.masked_top_k(scores, mask, 2)
  assert np.take_along_axis(mask, chosen, axis=1).all()
  assert (chosen[:, 0] != chosen[:, 1]).all()
  best = np.where(mask, scores, -np.inf).max(axis=1)
  np.testing.assert_allclose(scores[np.arange(500), chosen[:, 0]], best)


def test_policies_respect_a_narrowed_mask():
  env = lerl_recsim.make_env(num_users=16, seed=2, num_items=60)
  time_step = env.reset()
  allowed = np.zeros((16, 60), bool)
  allowed[:, 5:9] = True
  observation = {"observation": time_step.observation["observation"],
                 "mask": allowed}
  for name, policy_class in scripted_policies.SCRIPTED_POLICIES.items():
    policy = policy_class(env, seed=0)
    action = policy.action(time_step._replace(observation=observation)).action
    assert np.all((action >= 5) & (action < 9)), name


def test_sanity_binary_refuses_a_directory_of_another_configuration(tmp_path):
  run = sanity.run_sanity_table(str(tmp_path), num_sessions=8,
                                policies=("random",), num_items=40)
  assert "| satisfaction | random |" in run["markdown"]
  assert (tmp_path / "sanity.json").exists()
  before = (tmp_path / "sanity.json").read_text()
  with pytest.raises(ValueError, match="different configuration"):
    sanity.run_sanity_table(str(tmp_path), num_sessions=9,
                            policies=("random",), num_items=40)
  assert (tmp_path / "sanity.json").read_text() == before
