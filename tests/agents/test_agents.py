"""Every agent trains on a tiny scenario; masks hold; runs resume; bad input."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
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
from lerl_recsim.experiments import (checkpoints, evaluations, run_config,
                                     runner, train)
from lerl_recsim.planner import Planner, ReflectionPool, backends
from lerl_recsim.scenarios.catalogue import default_catalogue

TINY = {"num_items": 40}


def tiny_run(agent, **changes):
  options = dict(agent=agent, num_users=8, num_iterations=6,
                 num_eval_sessions=12, eval_interval=3, checkpoint_interval=3,
                 log_interval=3, planner="heuristic", scenario_overrides=TINY)
  options.update(changes)
  return run_config.RunConfig(**options)


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


# Agents whose whole run the kill-and-resume test below checks as well.
RESUMED_AGENTS = {"heuristic_dqn": dict(replan_every=1), "myopic": {}, "ppo": {}}


@pytest.mark.parametrize("agent", sorted(set(run_config.AGENTS) -
                                         set(RESUMED_AGENTS)))
def test_every_agent_trains_evaluates_and_writes_its_results(agent, tmp_path):
  summary = train.train_eval(tiny_run(agent), str(tmp_path))
  assert_trained_and_wrote_results(agent, summary, tmp_path)


def assert_trained_and_wrote_results(agent, summary, tmp_path):
  """A tiny run's summary and files: 12 evaluation sessions, evaluations
  at iterations 3 and 6, the policy, the configuration, TensorBoard events."""
  assert summary["num_sessions"] == 12
  for name in metrics.EPISODE_METRICS:
    assert np.isfinite(summary[name]["mean"])
  saved = json.loads((tmp_path / "summary.json").read_text())
  assert saved["config"]["run"]["agent"] == agent
  assert (tmp_path / "config.json").exists()
  scripted = run_config.AGENTS[agent].family == "scripted"
  assert (tmp_path / "policy" / "saved_model.pb").exists() != scripted
  if not scripted:
    assert saved["iterations"] == 6
    history = (tmp_path / "eval" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in history] == [3, 6]
    # Training user-steps by evaluation: 3 iterations of 8 users' steps
    # (plus the initial collection of replay agents) at a time.
    steps = [json.loads(line)["user_steps"] for line in history]
    assert 0 < steps[0] < steps[1] == saved["user_steps"]
    assert saved["learning_curve"]["iterations"] == [3, 6]
    assert list((tmp_path / "train").glob("events.out.tfevents.*"))
  # PPO is also evaluated sampling its policy, on the same users.
  sampled = run_config.AGENTS[agent].family == "ppo"
  assert ("sampled" in saved) == sampled
  if sampled:
    assert saved["sampled"]["num_sessions"] == 12
    for name in metrics.EPISODE_METRICS:
      assert np.isfinite(saved["sampled"][name]["mean"])
    assert saved["sampled"]["exposure_curve"]["step"]
    assert all(json.loads(line)["sampled"]["num_sessions"] == 12
               for line in history)
  # The planning oracle's search settings are its hyper-parameters.
  hyperparameters = json.loads((tmp_path / "config.json").read_text())[
      "hyperparameters"]
  if agent == "planning_oracle":
    assert hyperparameters == {"settings": {
        "horizon": 5, "samples": 2, "continuations": ["greedy", "fresh_greedy"],
        "fresh_window": 4, "candidates": 8}}
  elif scripted:
    assert hyperparameters == {}
  uses_planner = run_config.AGENTS[agent].planner is not None
  assert bool(saved["planner"]["train"]) == uses_planner
  if uses_planner:
    assert saved["planner"]["train"]["user_steps"] > 0
    assert saved["planner"]["eval"]["user_steps"] > 0


class PhaseFake(FakeListChatModel):
  """Records each prompt with the phase of the run (`phase[0]`) it came in."""
  phase: list = []
  prompts: list = []

  def _call(self, messages: list[Any], *args: Any, **kwargs: Any) -> str:
    self.prompts.append((self.phase[0], messages[-1].content))
    return super()._call(messages, *args, **kwargs)


# A valid plan under the default rules (7-9 categories) even when one of
# its categories is saturated (with slates of one single-category item, at
# most one is).
EIGHT_CATEGORIES = ["jazz", "tennis", "cooking", "science", "politics",
                    "movies", "travel", "history"]


@pytest.fixture
def fake_backend(monkeypatch):
  """The `fake` backend's model for every planner the run builds."""
  model = PhaseFake(
      responses=[json.dumps({"categories": EIGHT_CATEGORIES})],
      phase=["training"], prompts=[])
  monkeypatch.setattr(backends, "make_chat_model", lambda backend, **_: model)
  return model


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


def test_finished_run_is_reused_and_other_configuration_refused(tmp_path):
  first = train.train_eval(tiny_run("dqn"), str(tmp_path))
  before = (tmp_path / "summary.json").read_text()
  again = train.train_eval(tiny_run("dqn"), str(tmp_path))
  assert again == json.loads(before)
  with pytest.raises(ValueError, match="holds a run with a different configuration"):
    train.train_eval(tiny_run("dqn", seed=5), str(tmp_path))
  assert (tmp_path / "summary.json").read_text() == before
  del first


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


def test_corrupt_checkpoint_is_reported(tmp_path):
  run = tiny_run("dqn", num_iterations=3)
  directory = checkpoints.RunDirectory(str(tmp_path))
  train.train_eval(run, str(tmp_path))
  (tmp_path / "summary.json").unlink()  # make it resume instead of reuse
  for data in directory.checkpoints.glob("*.data-*"):
    data.write_bytes(b"not a checkpoint")
  with pytest.raises(checkpoints.CheckpointError, match=(
      r"cannot read the checkpoint .*ckpt-3 \(OpError\); it is corrupt — "
      r"remove that directory to start over")):
    train.train_eval(run, str(tmp_path))


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


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
  root = tmp_path / "run"
  command = [sys.executable, "-m", "lerl_recsim.binaries.train",
             "--agent=heuristic_dqn", f"--root_dir={root}",
             "--num_users=8", "--num_iterations=600", "--num_eval_sessions=8",
             "--checkpoint_interval=20", "--eval_interval=600",
             "--log_interval=500", "--num_items=40"]
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  checkpoints = root / "train" / "checkpoints"
  deadline = time.time() + 240
  # Killed soon after its second checkpoint: training is fast, so a run
  # much longer than the polling keeps the kill from coming after the end.
  while time.time() < deadline and not list(checkpoints.glob("ckpt-40.index")):
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  latest = tf.train.latest_checkpoint(str(checkpoints))
  assert latest, "no checkpoint before the kill"
  assert not (root / "summary.json").exists()
  saved_at = int(latest.rsplit("-", 1)[1])  # the kill may beat ckpt-40's record
  assert saved_at >= 20
  saved = {name for name, _ in tf.train.list_variables(latest)}
  assert any(name.startswith("replay_buffer/") for name in saved)
  resumed = subprocess.run(command, env=environment, capture_output=True,
                           text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resuming" in resumed.stderr
  first_logged = int(resumed.stderr.split("resuming")[1].split("iteration")[1].split()[0])
  assert first_logged == saved_at
  summary = json.loads((root / "summary.json").read_text())
  assert summary["iterations"] == 600


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


def summary_numbers(summary):
  return {name: summary[name] for name in metrics.EPISODE_METRICS}


def summary_without_timing(directory) -> dict:
  summary = json.loads((directory / "summary.json").read_text())
  for key in ("wall_time_s", "policy_dir"):
    summary.pop(key)
  return summary


def assert_ends_as_uninterrupted(resumed, whole) -> None:
  """The resumed run's summary and evaluation history are the uninterrupted
  run's, to the last digit."""
  assert summary_without_timing(resumed) == summary_without_timing(whole)
  assert (resumed / "eval" / "history.jsonl").read_text() == \
      (whole / "eval" / "history.jsonl").read_text()


def assert_seed_matters(run, whole, directory) -> None:
  """Another seed trains otherwise: repeating is not ignoring the seed."""
  other = train.train_eval(dataclasses.replace(run, seed=run.seed + 1),
                           str(directory))
  assert summary_numbers(other) != summary_numbers(whole)


def test_a_killed_run_resumes_with_its_environment_and_planner_state(
    tmp_path, monkeypatch, fake_backend):
  """Killed after the checkpoint of iteration 3, the run resumes with the
  training environment (users, steps, plan counters) and the planner
  (counts, plans in memory, lesson schedule) as that checkpoint left them,
  and ends with the uninterrupted run's summary."""
  monkeypatch.setattr(planner_environment, "EFFICIENT_REFLECTIONS",
                      {"reflect_every": 1, "reflect_growth": 1.0})
  seen: list[dict] = []
  iterate = learners.OffPolicyLearner.run_iteration

  def state_of(learner) -> dict:
    env = learner._collector._env
    saved = env.saved_state()["planner"]
    return {"steps_taken": int(env.wrapped_env()._steps_taken.numpy()),
            "counters": env._counters.numpy().tolist(),
            "planner_counts": saved["counts"], "memo": saved["memo"],
            "next_reflection": saved["next_reflection"]}

  def killed_at_4(learner):
    seen.append(state_of(learner))
    if len(seen) == 4:
      raise KeyboardInterrupt("killed")
    return iterate(learner)

  # K = 2: plans outlive a step, so their counters are state to restore.
  run = tiny_run("lerl", planner="fake", planner_mode="wait", replan_every=2)
  whole = train.train_eval(run, str(tmp_path / "whole"))
  assert whole["planner"]["train"]["llm_plans"] > 0  # the model's plans
  assert_seed_matters(run, whole, tmp_path / "other")
  seen.clear()
  monkeypatch.setattr(learners.OffPolicyLearner, "run_iteration", killed_at_4)
  with pytest.raises(KeyboardInterrupt):
    train.train_eval(run, str(tmp_path / "run"))
  assert json.loads((tmp_path / "run" / "train" / "environment_state.json")
                    .read_text())["iteration"] == 3
  at_checkpoint = seen[-1]
  assert at_checkpoint["steps_taken"] > 1 and at_checkpoint["memo"]
  seen.clear()
  summary = train.train_eval(run, str(tmp_path / "run"))
  assert seen[0] == at_checkpoint
  assert summary["iterations"] == 6
  assert summary["planner"]["train"]["planned_users"] > \
      at_checkpoint["planner_counts"]["planned_users"]
  # ... and ends as the uninterrupted run did, to the last digit.
  assert whole["iterations"] == 6
  assert_ends_as_uninterrupted(tmp_path / "run", tmp_path / "whole")


class ThousandfoldClock:
  """`time` for the runner, whose seconds pass a thousand times faster."""

  @staticmethod
  def perf_counter() -> float:
    return 1000 * time.perf_counter()


@pytest.mark.parametrize("agent", sorted(RESUMED_AGENTS))
def test_a_killed_and_resumed_run_ends_as_an_uninterrupted_one(
    tmp_path, monkeypatch, agent):
  """Training on the graph path repeats exactly for a seed, and exploration,
  replay sampling and PPO's sampling draw with keys a checkpoint holds: the
  run killed after its checkpoint of iteration 3 and resumed writes the
  summary and history the uninterrupted run writes, to the last digit
  (DQN's with a waiting LLM planner in the test above)."""
  run = tiny_run(agent, **RESUMED_AGENTS[agent])
  whole = train.train_eval(run, str(tmp_path / "whole"))
  assert_trained_and_wrote_results(agent, whole, tmp_path / "whole")
  assert_seed_matters(run, whole, tmp_path / "other")
  calls = []
  kinds = (learners.OffPolicyLearner, learners.OnPolicyLearner)
  iterate = {kind: kind.run_iteration for kind in kinds}
  for kind in kinds:
    def killed_at_5(self, iterate=iterate[kind]):
      calls.append(1)
      if len(calls) == 5:
        raise KeyboardInterrupt("killed")
      return iterate(self)
    monkeypatch.setattr(kind, "run_iteration", killed_at_5)
  # The killed process's clock runs a thousandfold: its seconds stand out
  # in the resumed run's wall time.
  monkeypatch.setattr(runner, "time", ThousandfoldClock)
  with pytest.raises(KeyboardInterrupt):
    train.train_eval(run, str(tmp_path / "resumed"))
  for kind in kinds:
    monkeypatch.setattr(kind, "run_iteration", iterate[kind])
  monkeypatch.setattr(runner, "time", time)
  saved_s = tf.train.load_variable(
      tf.train.latest_checkpoint(str(tmp_path / "resumed" / "train" /
                                     "checkpoints")),
      "wall_time_s/.ATTRIBUTES/VARIABLE_VALUE")
  started = time.perf_counter()
  summary = train.train_eval(run, str(tmp_path / "resumed"))
  took_s = time.perf_counter() - started
  assert summary["iterations"] == 6
  assert_ends_as_uninterrupted(tmp_path / "resumed", tmp_path / "whole")
  # Its wall time: the killed process's up to the checkpoint, then its own.
  assert saved_s > took_s
  assert saved_s < summary["wall_time_s"] < saved_s + took_s
