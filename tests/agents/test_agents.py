"""Every agent trains on a tiny scenario; masks hold; evaluation stays apart
from training's planner; bad input. (Resuming: tests/experiments/test_resume.py.)"""

import json
import threading
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from tf_agents.agents.dqn import dqn_agent
from tf_agents.policies import random_py_policy

import lerl_recsim
from lerl_recsim import (evaluation, learning_curves, metrics,
                         planner_environment)
from lerl_recsim.agents import bandit, dqn, learners, networks, ppo
from lerl_recsim.experiments import evaluations, run_config, runner, train
from lerl_recsim.planner import Planner, ReflectionPool
from lerl_recsim.scenarios.catalogue import default_catalogue
from tests.conftest import EIGHT_CATEGORIES
from tests.tiny_runs import (RESUMED_AGENTS, TINY,
                              assert_trained_and_wrote_results, tiny_run)


def tiny_ppo(env):
  return ppo.make_agent(env, ppo.Hyperparameters(
      fc_layer_params=(16,), learning_rate=1e-3, num_epochs=1,
      entropy_regularization=0.0))


def test_training_stops_at_the_first_evaluation_where_the_curve_levelled(
    tmp_path):
  run = tiny_run("dqn", num_iterations=60, eval_interval=2,
                 checkpoint_interval=60, stop_when_levelled=True)
  summary = train.train_eval(run, str(tmp_path))
  curve = summary["learning_curve"]
  rule = learning_curves.PlateauRule()
  # Stopped at an evaluation, before the budget, where the rule first held.
  assert summary["iterations"] == curve["iterations"][-1] < 60
  assert curve["levelled_off"] and curve["levelled_at"] == summary["iterations"]
  assert not any(rule.levelled(curve["mean"], curve["ci95"], end)
                 for end in range(1, len(curve["mean"])))
  # The stopping evaluation is the final one, recorded once.
  assert curve["mean"][-1] == summary["cumulative_reward"]["mean"]
  assert len(curve["iterations"]) == len(set(curve["iterations"]))


def with_mask(time_step, mask):
  """The time step as tensors, its observation's mask replaced."""
  return tf.nest.map_structure(tf.convert_to_tensor, time_step._replace(
      observation=dict(time_step.observation, mask=mask)))


@pytest.mark.parametrize("agent", sorted(set(run_config.AGENTS) -
                                         set(RESUMED_AGENTS)))
def test_every_agent_trains_evaluates_and_writes_its_results(agent, tmp_path):
  summary = train.train_eval(tiny_run(agent), str(tmp_path))
  assert_trained_and_wrote_results(agent, summary, tmp_path)


def test_evaluation_writes_no_lessons_and_counts_its_own_calls(
    tmp_path, monkeypatch, fake_backend):
  # A lesson about every session, evaluation's too if it wrote any.
  monkeypatch.setattr(planner_environment, "EFFICIENT_REFLECTIONS",
                      {"reflect_every": 1, "reflect_growth": 1.0})
  evaluate = evaluation.evaluate_sessions

  def evaluate_in_phase(*args, **kwargs):
    fake_backend.phase[0] = "evaluation"
    try:
      return evaluate(*args, **kwargs)
    finally:
      fake_backend.phase[0] = "training"

  monkeypatch.setattr(evaluation, "evaluate_sessions", evaluate_in_phase)
  summary = train.train_eval(
      tiny_run("lerl", planner="fake", planner_mode="wait"), str(tmp_path))
  lessons = [phase for phase, text in fake_backend.prompts
             if "Finished session" in text]
  plans = [phase for phase, text in fake_backend.prompts
           if "Finished session" not in text]
  assert lessons and set(lessons) == {"training"}
  pool = ReflectionPool.load(tmp_path / "train" / "reflections.json")
  assert len(pool) == min(len(lessons), pool.capacity)
  evaluations = [json.loads(line)["planner"] for line in
                 (tmp_path / "eval" / "history.jsonl").read_text().splitlines()]
  assert len(evaluations) == 2
  assert (sum(e["llm_calls"] for e in evaluations)
          == plans.count("evaluation") > 0)
  assert summary["planner"]["eval"] == evaluations[-1]
  # Evaluation waits for the model, whose every plan is valid.
  assert all(e["llm_plans"] == e["planned_users"] > 0 and e["fallbacks"] == 0
             for e in evaluations)
  assert (summary["planner"]["train"]["llm_calls"]
          == plans.count("training") + len(lessons))


def test_evaluation_reads_the_pool_a_resumed_run_restores(tmp_path, fake_backend):
  saved = ReflectionPool()
  saved.add("Rotate the genres.", 3.0)
  saved.save(tmp_path / "reflections.json")
  train_env, eval_env = runner.build_environments(
      tiny_run("lerl", planner="fake"), 0, tmp_path / "reflections.json")
  assert train_env.planner.reflections.entries == saved.entries
  assert eval_env.planner.reflections is train_env.planner.reflections
  assert fake_backend.prompts == []


def random_masks(rng, batch, num_items):
  mask = rng.random((batch, num_items)) < 0.2
  mask[np.arange(batch), rng.integers(0, num_items, batch)] = True
  return mask


@pytest.mark.parametrize("make", [
    lambda env: dqn.make_agent(env, dqn.Hyperparameters(
        fc_layer_params=(16,), learning_rate=1e-3, epsilon_greedy=0.5,
        target_update_period=10)),
    tiny_ppo,
    lambda env: bandit.make_agent(env, bandit.Hyperparameters(
        fc_layer_params=(16,), epsilon=0.5)),
], ids=["dqn", "ppo", "myopic"])
def test_no_masked_item_is_ever_recommended(make):
  env = lerl_recsim.make_env(num_users=32, seed=0, **TINY)
  agent = make(env)
  observed = env.reset()
  rng = np.random.default_rng(0)
  chosen_items = set()
  for policy in (agent.collect_policy, agent.policy):
    for _ in range(60):
      mask = random_masks(rng, 32, 40)
      action = policy.action(with_mask(observed, mask)).action.numpy()
      assert mask[np.arange(32), action].all()
      chosen_items.update(action.tolist())
  # 3,840 sampled actions spread over many items: the check is not vacuous.
  assert len(chosen_items) > 20


def test_ppo_actor_samples_every_allowed_item_and_no_other():
  env = lerl_recsim.make_env(num_users=32, seed=0, **TINY)
  agent = tiny_ppo(env)
  mask = np.zeros((32, 40), bool)
  mask[:, [5, 23]] = True
  step = with_mask(env.reset(), mask)
  distribution = agent.collect_policy.distribution(step).action
  assert (distribution.probs_parameter().numpy()[~mask] == 0).all()
  policy = learners.SeededSamplingPolicy(agent.collect_policy, seed=0)
  state = policy.get_initial_state(32)
  sampled = set()
  for _ in range(20):
    action_step = policy.action(step, state)
    state = action_step.state
    sampled.update(action_step.action.numpy().tolist())
  assert sampled == {5, 23}


def test_ppo_actor_moves_an_items_category_mates_with_it():
  """A gradient step raising one item's log-probability raises the logit of
  the other item of its category by a good share of its own rise and more
  than twice any other item's: the actor shares the Q-network's item-category
  structure (independent logits would leave the category-mate among the
  other items)."""
  tf.keras.utils.set_random_seed(0)
  env = lerl_recsim.make_env(num_users=8, seed=0, **TINY)
  inputs = networks.agent_inputs(env, "PPO")
  actor, _ = networks.masked_actor_and_value_networks(
      inputs.time_step_spec.observation, inputs.action_spec,
      inputs.item_categories, inputs.encoder, (16,))
  actor.create_variables(inputs.time_step_spec.observation)
  time_step = env.reset()
  for _ in range(3):
    time_step = env.step(np.arange(8, dtype=np.int32))
  observation = tf.nest.map_structure(tf.convert_to_tensor,
                                      time_step.observation)
  group = inputs.item_categories.argmax(axis=1)
  assert (inputs.item_categories.sum(axis=1) == 1).all()
  item = 0
  mate = [j for j in np.flatnonzero(group == group[item]) if j != item][0]
  before = actor(observation)[0].logits.numpy()
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(actor(observation)[0].log_prob(tf.fill([8], item)))
  gradients = tape.gradient(loss, actor.trainable_variables)
  tf.keras.optimizers.SGD(0.1).apply_gradients(
      zip(gradients, actor.trainable_variables))
  moved = (actor(observation)[0].logits.numpy() - before).mean(axis=0)
  others = np.delete(moved, [item, mate])
  assert moved[mate] > 0.3 * moved[item] > 0
  assert moved[mate] > 2 * others.max()


def test_sampled_evaluation_repeats_for_a_seed():
  env = lerl_recsim.make_env(num_users=12, seed=1, **TINY)
  agent = tiny_ppo(env)

  def evaluate(seed):
    policy = learners.SeededSamplingPolicy(agent.collect_policy, seed)
    return evaluations.evaluate_policy(env, learners.eager_policy(policy))

  first, other, again = evaluate(0), evaluate(1), evaluate(0)
  for name in metrics.EPISODE_METRICS:
    assert first[name] == again[name]
  assert any(first[name] != other[name] for name in metrics.EPISODE_METRICS)


def test_an_evaluations_background_requests_end_with_it():
  """Evaluation planning in the background leaves no request behind: its
  worker stops after the batch in flight (which it answers), so it cannot
  compete with training for the model afterwards."""
  gate = threading.Event()

  class Slow(FakeListChatModel):
    def _call(self, *args: Any, **kwargs: Any) -> str:
      assert gate.wait(30)
      return super()._call(*args, **kwargs)

  reply = json.dumps({"categories": EIGHT_CATEGORIES})
  train_env = planner_environment.make_planned_env(
      planner=Planner(Slow(responses=[reply]), default_catalogue(),
                      reflections=None), num_users=4, seed=0, **TINY)
  view = train_env.planner.evaluation_view()
  eval_env = planner_environment.PlannedEnvironment(
      lerl_recsim.make_env(num_users=4, seed=1, **TINY), view,
      wait_for_planner=False)
  policy = random_py_policy.RandomPyPolicy(
      eval_env.time_step_spec(), eval_env.action_spec(),
      observation_and_action_constraint_splitter=lambda o: (o, o["mask"]))
  timer = threading.Timer(1.0, gate.set)  # the model answers after a while
  timer.start()
  summary = evaluations.evaluate_policy(eval_env, policy)
  timer.join()
  assert summary["planner"]["provisional_plans"] > 0  # it did not wait
  assert view.background_pending == 0 and view._worker._thread is None
  assert view.metrics()["background_pending"] == 0


def test_planner_masks_hold_during_lerl_training(tmp_path):
  # The planned environment rejects any action outside its mask, so a
  # completed run means every one of its actions was allowed.
  summary = train.train_eval(tiny_run("lerl", num_iterations=30), str(tmp_path))
  assert summary["planner"]["train"]["user_steps"] >= 30 * 8 * 2 * 0.8


def test_a_run_records_its_threads_per_op_and_refuses_a_process_with_others(
    tmp_path):
  summary = train.train_eval(tiny_run("dqn", num_iterations=2),
                             str(tmp_path / "one"))
  assert summary["config"]["run"]["intra_op_threads"] == 1
  assert tf.config.threading.get_intra_op_parallelism_threads() == 1
  # TensorFlow already runs ops in this process with one thread per op.
  with pytest.raises(ValueError, match=(
      r"intra_op_threads=2 cannot take effect: TensorFlow already runs ops in "
      r"this process with intra_op_threads=1")):
    train.train_eval(tiny_run("dqn", intra_op_threads=2), str(tmp_path / "two"))
  assert not (tmp_path / "two").exists()
  with pytest.raises(ValueError, match=r"intra_op_threads must be an int >= 0"):
    run_config.RunConfig(agent="dqn", intra_op_threads=-1)


@pytest.mark.parametrize("agent, overrides, iterations", [
    ("dqn", {}, 30_000),
    ("lerl", {"exit_rule": "satisfaction"}, 30_000),
    ("heuristic_dqn", {"exit_rule": "temper"}, 20_000),
    ("dqn", {"exit_rule": "category_window", "exit_params": {"preset": "dorl"}},
     40_000),
    ("heuristic_dqn", {"exit_rule": "category_window",
                       "exit_params": {"preset": "dorl", "window": 4}}, 40_000),
    # Without the preset the rule's window differs: the family's budget.
    ("dqn", {"exit_rule": "category_window"}, 30_000),
    ("dqn", {"exit_rule": "category_window",
             "exit_params": {"preset": "easyrl4rec"}}, 30_000),
    ("ppo", {}, 4_000),
    ("lerl_ppo", {"exit_rule": "temper"}, 4_000),
])
def test_the_default_budget_is_the_familys_under_the_exit_rule(
    agent, overrides, iterations):
  run = run_config.RunConfig(agent=agent, scenario_overrides=overrides)
  assert run.num_iterations == iterations
  assert run.eval_interval == iterations // 10
  assert run_config.RunConfig(agent=agent, scenario_overrides=overrides,
                              num_iterations=300).num_iterations == 300


@pytest.mark.parametrize("changes, message", [
    ({"agent": "sarsa"}, "unknown agent 'sarsa'"),
    ({"scenario": "kuairand"}, "unknown scenario 'kuairand'"),
    ({"replan_every": 0}, "replan_every must be an int >= 1"),
    ({"num_users": 0}, "num_users must be an int >= 1"),
])
def test_bad_run_settings_are_named(changes, message):
  with pytest.raises(ValueError, match=message):
    tiny_run(changes.pop("agent", "lerl"), **changes)


def test_bad_backend_and_exit_rule_are_named(tmp_path):
  with pytest.raises(ValueError, match="unknown backend 'gpt9'|'gpt9'"):
    train.train_eval(tiny_run("lerl", planner="gpt9"), str(tmp_path / "a"))
  with pytest.raises(ValueError, match="unknown exit rule 'bored'"):
    train.train_eval(tiny_run("dqn", scenario_overrides={"exit_rule": "bored"}),
                     str(tmp_path / "b"))
  assert not (tmp_path / "b").exists()


def test_slates_are_masked_top_k_of_the_q_values(tmp_path):
  summary = train.train_eval(
      tiny_run("lerl", scenario_overrides={"num_items": 40, "slate_size": 3}),
      str(tmp_path))
  assert summary["num_sessions"] == 12
  env = lerl_recsim.make_env(num_users=16, seed=1, num_items=40, slate_size=3)
  learner = dqn.build_learner(env, dqn.Hyperparameters(
      fc_layer_params=(16,), learning_rate=1e-3, epsilon_greedy=0.3,
      target_update_period=10, replay_capacity=1000, batch_size=8,
      collect_steps_per_iteration=1, initial_collect_steps=1))
  agent = learner.agent
  observed = env.reset()
  rng = np.random.default_rng(0)
  for policy in (learner.greedy_policy, learner.collect_policy):
    for _ in range(30):
      mask = random_masks(rng, 16, 40)
      mask[:, :3] = True  # at least a slate's worth
      step = with_mask(observed, mask)
      slates = policy.action(step).action.numpy()
      assert slates.shape == (16, 3)
      assert np.take_along_axis(mask, slates, axis=1).all()
      assert all(len(set(row)) == 3 for row in slates.tolist())
  # The greedy slate holds the three highest allowed Q-values (ties aside).
  q_values = agent._q_network(step.observation["observation"])[0].numpy()
  greedy = learner.greedy_policy.action(step).action.numpy()
  allowed_q = np.where(mask, q_values, -np.inf)
  np.testing.assert_allclose(
      np.sort(np.take_along_axis(allowed_q, greedy, axis=1), axis=1),
      np.sort(allowed_q, axis=1)[:, -3:])


def test_learners_count_the_user_steps_they_collect():
  """Progress lines divide these by wall time: every slot's steps count."""
  env = lerl_recsim.make_env(num_users=8, seed=0, **TINY)
  hyperparameters = dqn.Hyperparameters(batch_size=16)
  learner = dqn.build_learner(env, hyperparameters)
  learner.run_iteration()
  learner.run_iteration()
  assert learner.user_steps == 8 * (
      hyperparameters.initial_collect_steps +
      2 * hyperparameters.collect_steps_per_iteration)


def test_item_ddqn_computes_tf_agents_double_dqn_targets():
  """Scoring only the needed items gives TF-Agents' own double-DQN
  Q-values and next-state values (the online network's masked argmax,
  scored by the target network), for the same weights and experience."""
  env = lerl_recsim.make_env(num_users=8, seed=0, **TINY)
  learner = dqn.build_learner(env, dqn.Hyperparameters(
      batch_size=16, target_update_period=1000))
  for _ in range(30):
    learner.run_iteration()  # the online and target weights now differ
  agent = learner.agent
  experience = tf.nest.map_structure(
      lambda x: x[:, -3:-1], learner.replay_buffer.gather_all())
  time_steps, policy_steps, next_time_steps = agent._as_transition(experience)
  masks = random_masks(np.random.default_rng(0), 8, 40)
  next_time_steps = with_mask(next_time_steps, masks)
  ours = agent._compute_q_values(time_steps, policy_steps.action)
  theirs = dqn_agent.DdqnAgent._compute_q_values(agent, time_steps,
                                                 policy_steps.action)
  np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5,
                             atol=1e-6)
  ours = agent._compute_next_q_values(next_time_steps, policy_steps.info)
  theirs = dqn_agent.DdqnAgent._compute_next_q_values(
      agent, next_time_steps, policy_steps.info)
  np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5,
                             atol=1e-6)
  # Not vacuous: the online network scores those next actions otherwise.
  online = agent._compute_q_values(
      next_time_steps, agent.policy.action(next_time_steps).action)
  assert not np.allclose(ours.numpy(), online.numpy(), rtol=1e-3)


