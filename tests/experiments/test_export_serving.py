"""lerl-export, the serving API and lerl-eval, on one tiny trained run."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import lerl_recsim  # first: Keras 2 for TF-Agents
import numpy as np
import pytest
import tensorflow as tf

from lerl_recsim import bundle, serving
from lerl_recsim.agents import dqn
from lerl_recsim.experiments import (checkpoints, evaluate, export,
                                     run_config, train)
from lerl_recsim.planner_environment import make_planned_env
from tests.llm_server import LoopbackLLMServer

SECRET = "sk-test-secret-must-not-leak-4242"
SCENARIO = {"num_items": 60}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp("run") / "run"
  train.train_eval(run_config.RunConfig(
      agent="heuristic_dqn", num_iterations=5, num_users=8,
      num_eval_sessions=8, eval_interval=5, checkpoint_interval=5,
      log_interval=5, scenario_overrides=SCENARIO), str(root))
  return root


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> pathlib.Path:
  target = tmp_path_factory.mktemp("bundle") / "bundle"
  export.export_bundle(trained, target)
  return target


@pytest.fixture(scope="module")
def recommender(exported) -> serving.HierarchicalRecommender:
  return serving.HierarchicalRecommender.load(exported, replan_every=3)


def rollout(env, policy, steps: int):
  """Per step: the time step seen, each slot's session so far and, for a
  planned environment, each slot's plan."""
  sessions = [[] for _ in range(env.batch_size)]
  time_step = env.reset()
  seen = []
  for _ in range(steps):
    seen.append((time_step, [list(s) for s in sessions],
                 getattr(env, "plans", None)))
    action = policy(time_step)
    time_step = env.step(action)
    clicks = time_step.observation["observation"]["click_history"]
    for slot in range(env.batch_size):
      if time_step.step_type[slot] == 0:
        sessions[slot] = []
      else:
        clicked = int(action[slot]) if clicks[slot, -1, 0] > 0 else None
        sessions[slot].append(serving.Step(
            [int(action[slot])], clicked, float(time_step.reward[slot])))
  return seen


def random_policy(seed: int):
  rng = np.random.default_rng(seed)
  def act(time_step):
    return np.array([rng.choice(np.flatnonzero(m))
                     for m in time_step.observation["mask"]], np.int32)
  return act


def saved_policy_actions(policy, time_step) -> np.ndarray:
  step = tf.nest.map_structure(tf.convert_to_tensor, time_step)
  return policy.action(step).action.numpy()


def run_python(code: str) -> str:
  """Runs `code` in a fresh interpreter, without TF_USE_LEGACY_KERAS."""
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                        capture_output=True, text=True, env=env, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


# --- export -----------------------------------------------------------------

def test_bundle_holds_policy_and_spec(trained, exported):
  spec = bundle.read_spec(exported)
  assert (exported / "policy" / "saved_model.pb").is_file()
  assert spec["planner"]["backend"] == "heuristic"
  # The run's K, the default: a new plan at every step.
  run = json.loads((trained / "config.json").read_text())["run"]
  assert spec["planner"]["replan_every"] == run["replan_every"] == 1
  assert "{recent}" in spec["planner"]["prompt_template"]["human"]
  assert len(spec["catalogue"]["category_names"]) == 20
  facts = bundle.ScenarioFacts.from_json(spec["scenario"])
  assert (facts.num_items, facts.history_length, facts.slate_size) == (60, 10, 1)
  assert facts.item_categories.sum(axis=1).tolist() == [1.0] * 60


def test_the_api_key_a_run_was_planned_with_reaches_no_file(
    tmp_path, monkeypatch):
  """A run planned by a served model (the loopback server) with the key in
  the environment: the key went out with every request, yet neither the
  run's files nor its bundle hold it."""
  monkeypatch.setenv("OPENAI_API_KEY", SECRET)
  with LoopbackLLMServer() as server:
    monkeypatch.setenv("LERL_OPENAI_BASE_URL", server.base_url)
    root = tmp_path / "run"
    train.train_eval(run_config.RunConfig(
        agent="lerl", planner="openai:loopback", planner_mode="wait",
        num_iterations=4, num_users=4, num_eval_sessions=4, eval_interval=4,
        checkpoint_interval=4, log_interval=4, scenario_overrides=SCENARIO),
        str(root))
  assert server.requests > 0
  assert set(server.authorizations) == {f"Bearer {SECRET}"}
  target = export.export_bundle(root, tmp_path / "bundle")
  assert bundle.read_spec(target)["planner"]["backend"] == "openai:loopback"
  files = [p for folder in (root, target) for p in folder.rglob("*")
           if p.is_file()]
  assert any(p.name == "config.json" for p in files)
  for path in files:
    assert SECRET.encode() not in path.read_bytes(), path


def test_export_refuses_a_non_empty_export_dir(trained, tmp_path):
  target = tmp_path / "taken"
  target.mkdir()
  (target / "keep.txt").write_text("mine")
  with pytest.raises(FileExistsError, match="already exists and is not empty"):
    export.export_bundle(trained, target)
  assert [p.name for p in target.iterdir()] == ["keep.txt"]
  assert (target / "keep.txt").read_text() == "mine"
  assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no staging left


def test_export_errors_for_missing_run_policy_and_corrupt_model(trained,
                                                                tmp_path):
  with pytest.raises(FileNotFoundError, match=(
      r"run directory '.*nope' does not exist \(expected the --root_dir of "
      r"lerl-train\)")):
    export.export_bundle(tmp_path / "nope", tmp_path / "b1")
  no_policy = tmp_path / "no_policy"
  no_policy.mkdir()
  shutil.copy(trained / "config.json", no_policy)
  with pytest.raises(FileNotFoundError, match="has no exported policy"):
    export.export_bundle(no_policy, tmp_path / "b2")
  corrupt = tmp_path / "corrupt"
  shutil.copytree(trained, corrupt)
  (corrupt / "policy" / "saved_model.pb").write_bytes(b"\x00garbage" * 10)
  with pytest.raises(ValueError, match="corrupt or unreadable"):
    export.export_bundle(corrupt, tmp_path / "b3")
  assert not (tmp_path / "b2").exists() and not (tmp_path / "b3").exists()


# --- the low level in a fresh process ------------------------------------------

def test_fresh_process_gives_the_trained_policy_actions(trained, exported,
                                                        tmp_path):
  env = make_planned_env("interest_evolution", planner="heuristic",
                         replan_every=2, num_users=8, seed=4, **SCENARIO)
  steps = rollout(env, random_policy(0), 6)
  # The trained agent itself, restored in this process from its checkpoint.
  config = json.loads((trained / "config.json").read_text())
  hp = config["hyperparameters"]
  agent = dqn.make_agent(env, dqn.Hyperparameters(**hp))
  checkpoint = tf.train.latest_checkpoint(
      str(checkpoints.RunDirectory(str(trained)).checkpoints))
  tf.train.Checkpoint(agent=agent).restore(checkpoint).expect_partial()
  arrays, expected = {}, []
  for t, (time_step, _, _) in enumerate(steps):
    flat = tf.nest.flatten(time_step)
    arrays.update({f"{t}_{i}": np.asarray(a) for i, a in enumerate(flat)})
    expected.append(saved_policy_actions(agent.policy, time_step))
  np.savez(tmp_path / "steps.npz", **arrays)
  # Plain TensorFlow, nothing else imported: the TF-Agents `action`
  # signature on whole time steps, and `serving_default` on observation
  # fields and mask.
  out = run_python(f"""
      import sys, numpy as np
      import tensorflow as tf
      policy = tf.saved_model.load({str(exported / 'policy')!r})
      spec = policy.action.concrete_functions[0].structured_input_signature[0][0]
      serve = policy.signatures["serving_default"]
      data = np.load({str(tmp_path / 'steps.npz')!r})
      for t in range({len(steps)}):
        flat = [data[f"{{t}}_{{i}}"] for i in range(len(tf.nest.flatten(spec)))]
        step = tf.nest.pack_sequence_as(spec, [tf.constant(a) for a in flat])
        request = dict(step.observation["observation"],
                       mask=step.observation["mask"])
        print(policy.action(step).action.numpy().tolist(),
              serve(**request)["item"].numpy().tolist())
      assert not {{"lerl_recsim", "tf_agents",
                   "tensorflow_probability"}} & set(sys.modules)
      """)
  got = [json.loads("[" + line.replace("] [", "], [") + "]")
         for line in out.strip().splitlines()]
  assert got == [[a.tolist(), a.tolist()] for a in expected]
  for (time_step, _, _), actions in zip(steps, expected):
    mask = time_step.observation["mask"]
    assert mask[np.arange(len(actions)), actions].all()


def test_saved_model_cli_runs_the_serving_signature(exported, tmp_path):
  env = make_planned_env("interest_evolution", planner="heuristic",
                         num_users=3, seed=5, **SCENARIO)
  observation = env.reset().observation
  request = dict(observation["observation"], mask=np.zeros_like(
      observation["mask"]))
  request["mask"][[0, 1, 2], [7, 0, 59]] = True  # one allowed item each
  np.savez(tmp_path / "request.npz", **request)
  inputs = ";".join(f"{name}={tmp_path / 'request.npz'}[{name}]"
                    for name in request)
  done = subprocess.run(
      [str(pathlib.Path(sys.executable).parent / "saved_model_cli"), "run",
       "--dir", str(exported / "policy"), "--tag_set", "serve",
       "--signature_def", "serving_default", "--inputs", inputs],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert done.returncode == 0, done.stderr[-3000:]
  assert "Result for output key item:\n[ 7  0 59]" in done.stdout


def test_serving_loads_in_a_fresh_process(exported, recommender):
  history = [{"items": [3], "clicked": 3, "engagement": 0.5},
             {"items": [17], "clicked": None, "engagement": 0.0}]
  out = run_python(f"""
      from lerl_recsim.serving import HierarchicalRecommender
      r = HierarchicalRecommender.load({str(exported)!r}, replan_every=3)
      print(r.recommend({history!r}))
      """)
  assert out.strip().splitlines()[-1] == str(recommender.recommend(history))


# --- serving --------------------------------------------------------------------

def test_observation_matches_the_environment(recommender):
  env = lerl_recsim.make_env("interest_evolution", num_users=6, seed=2,
                             max_session_length=30, **SCENARIO)
  facts = bundle.ScenarioFacts.from_scenario(env.scenario)
  assert np.array_equal(facts.item_categories,
                        recommender.facts.item_categories)
  checked = 0
  for time_step, sessions, _ in rollout(env, random_policy(1), 40):
    for slot, session in enumerate(sessions):
      built = recommender.observation(session)
      for name, value in built.items():
        want = time_step.observation["observation"][name][slot]
        np.testing.assert_allclose(value, want, rtol=1e-6, err_msg=name)
        assert value.dtype == want.dtype, name
      checked += bool(session)
  assert checked > 150


def test_serving_plans_and_acts_as_the_planned_environment(exported,
                                                           recommender):
  policy, _ = bundle.load_policy(exported / "policy")
  env = make_planned_env("interest_evolution", planner="heuristic",
                         replan_every=3, num_users=6, seed=0, **SCENARIO)
  steps = rollout(env, lambda t: saved_policy_actions(policy, t), 25)
  for time_step, sessions, plans in steps:
    active = [s for s, kind in enumerate(time_step.step_type) if kind != 2]
    recs = recommender.recommend_batch([sessions[s] for s in active])
    actions = saved_policy_actions(policy, time_step)
    for slot, rec in zip(active, recs):
      assert rec.categories == plans[slot]
      assert rec.items == (actions[slot],)
      np.testing.assert_array_equal(rec.allowed,
                                    time_step.observation["mask"][slot])
      item_categories = np.flatnonzero(recommender.facts.item_categories[
          rec.items[0]])
      assert set(item_categories) & set(rec.categories)
      assert rec.allowed[list(rec.items)].all()


def test_serving_without_planner_allows_every_item(exported):
  flat = serving.HierarchicalRecommender.load(exported, planner="none")
  (rec,) = flat.recommend_batch([[]])
  assert rec.categories is None and rec.allowed.all()
  assert flat.backend == "none"


@pytest.mark.parametrize("history, error, match", [
    ([{"items": [60]}], ValueError, r"unknown item ids \[60\]; expected ids in \[0, 59\]"),
    ([{"items": [-1]}], ValueError,
     r"history step 0: unknown item ids \[-1\]; expected ids in \[0, 59\]"),
    ([{"items": [1, 2]}], ValueError,
     r"shows 2 items \[1, 2\]; the bundle's slate size is 1"),
    ([{"item": [1]}], ValueError,
     r"has keys \['item'\]; expected 'items' and optionally 'clicked'"),
    ([{"items": "1"}], TypeError,
     r"items '1' must be a list of int item ids"),
    ([{"items": [1], "clicked": 2}], ValueError,
     r"clicked 2 is not one of the items shown \[1\] \(use None"),
    ([{"items": [1], "engagement": 0.3}], ValueError,
     r"engagement 0.3 without a click; expected 0 when clicked is None"),
    ([{"items": [1], "clicked": 1, "engagement": 7.0}], ValueError,
     r"engagement 7.0 must be a number in \[0, 1\]"),
    ([[1]], TypeError,
     r"history step 0 is a list; expected a Step or a dict with 'items'"),
    ("abc", TypeError,
     r"a history must be a list of steps, oldest first; got a str"),
    ([{"items": [1]}] * 101, ValueError,
     r"the history has 101 steps; sessions of this bundle's scenario last "
     r"at most 100"),
])
def test_serving_rejects_bad_histories(recommender, history, error, match):
  with pytest.raises(error, match=match):
    recommender.recommend(history)


def test_act_takes_the_environments_own_observations_and_masks(exported,
                                                               recommender):
  policy, _ = bundle.load_policy(exported / "policy")
  env = make_planned_env("interest_evolution", planner="heuristic",
                         num_users=6, seed=4, **SCENARIO)
  time_step = env.reset()
  for _ in range(3):
    slates = recommender.act(time_step.observation["observation"],
                             time_step.observation["mask"])
    assert slates.shape == (6, 1)
    assert slates[:, 0].tolist() == list(saved_policy_actions(policy,
                                                              time_step))
    time_step = env.step(slates[:, 0])


def _observation_and_mask(recommender, users=2):
  observation = serving.stack([recommender.observation([])] * users)
  return observation, np.ones((users, recommender.facts.num_items), bool)


@pytest.mark.parametrize("change, error, match", [
    (lambda o, m: o.pop("click_history"), ValueError,
     r"observation has fields \[.*\]; expected \[.*'click_history'"),
    (lambda o, m: o.update(item_history=o["item_history"][:, :3]), ValueError,
     r"field 'item_history' has shape \(2, 3, 1\); expected \[batch, 10, 1\]"),
    (lambda o, m: o.update(session_length=o["session_length"] + 0.5),
     TypeError, r"field 'session_length' has dtype float64; expected integers"),
    (lambda o, m: o.update(item_history=o["item_history"] + 61), ValueError,
     r"'item_history' holds unknown item ids \[60\]; expected ids in \[0, 59\]"),
    (lambda o, m: o.update(mean_engagement=o["mean_engagement"] * np.nan),
     ValueError, r"'mean_engagement' holds non-finite values"),
    (lambda o, m: o.update(session_length=o["session_length"][:1]),
     ValueError, r"'session_length' holds 1 users; the other fields 2"),
    (lambda o, m: m.__setitem__(1, False), ValueError,
     r"mask allows fewer than 1 item\(s\) for user\(s\) \[1\]"),
])
def test_act_rejects_malformed_observations_naming_the_field(
    recommender, change, error, match):
  observation, mask = _observation_and_mask(recommender)
  change(observation, mask)
  with pytest.raises(error, match=match):
    recommender.act(observation, mask)


def test_act_rejects_a_mask_of_the_wrong_kind(recommender):
  observation, mask = _observation_and_mask(recommender)
  with pytest.raises(TypeError, match="mask has dtype int64; expected bool"):
    recommender.act(observation, mask.astype(np.int64))
  with pytest.raises(ValueError, match=r"mask has shape \(2, 59\); expected "
                     r"\[2, 60\]"):
    recommender.act(observation, mask[:, 1:])


def test_load_rejects_mismatched_or_foreign_bundles(exported, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(exported, copy)
  spec = json.loads((copy / "planner_spec.json").read_text())
  spec["scenario"]["num_items"] = 61
  spec["scenario"]["item_categories"].append([0])
  (copy / "planner_spec.json").write_text(json.dumps(spec))
  with pytest.raises(ValueError, match=r"num_items 60 where .* needs 61"):
    serving.HierarchicalRecommender.load(copy)
  with pytest.raises(FileNotFoundError, match="not a serving bundle"):
    serving.HierarchicalRecommender.load(tmp_path)
  (copy / "planner_spec.json").write_text('{"format": "other"}')
  with pytest.raises(ValueError, match="expected 'lerl-recsim/serving-bundle/1'"):
    serving.HierarchicalRecommender.load(copy)


# --- lerl-eval --------------------------------------------------------------------

def test_lerl_eval_on_another_exit_rule(exported, trained, tmp_path):
  output = tmp_path / "temper.json"
  summary = evaluate.evaluate(exported, output, overrides={"exit_rule": "temper"},
                              num_eval_sessions=8)
  saved = json.loads(output.read_text())
  assert saved["num_sessions"] == 8
  assert saved["config"]["scenario"]["exit_rule"] == "temper"
  assert saved["config"]["planner"] == "heuristic"
  assert saved["planner"]["user_steps"] > 0
  for name in ("cumulative_reward", "interaction_length", "step_reward"):
    assert set(saved[name]) == {"mean", "ci95"}
  assert summary["num_sessions"] == 8
  before = output.read_text()
  with pytest.raises(FileExistsError, match=(
      r"--output '.*' already exists; choose a new path \(nothing was "
      r"overwritten\)")):
    evaluate.evaluate(trained, output, planner="none", num_eval_sessions=8)
  assert output.read_text() == before
  flat = evaluate.evaluate(trained, tmp_path / "flat.json", planner="none",
                           num_eval_sessions=8)
  assert flat["config"]["planner"] is None and flat["planner"] == {}


def test_lerl_eval_rejects_an_item_count_mismatch(exported, tmp_path):
  with pytest.raises(ValueError, match=r"num_items 60 where scenario .* needs 80"):
    evaluate.evaluate(exported, tmp_path / "x.json",
                      overrides={"num_items": 80}, num_eval_sessions=4)
  assert not (tmp_path / "x.json").exists()


def test_exported_ppo_policy_is_the_greedy_one_the_run_reports(tmp_path):
  """lerl-eval of a PPO run's saved policy, on the run's evaluation users,
  gives the run's top-level (greedy) numbers, not its sampled ones."""
  root = tmp_path / "run"
  reported = train.train_eval(run_config.RunConfig(
      agent="ppo", num_iterations=3, num_users=8, num_eval_sessions=8,
      eval_interval=3, checkpoint_interval=3, log_interval=3,
      scenario_overrides=SCENARIO), str(root))
  evaluated = evaluate.evaluate(root, tmp_path / "eval.json",
                                   num_eval_sessions=8)
  for name in ("cumulative_reward", "interaction_length", "category_coverage"):
    assert evaluated[name] == pytest.approx(reported[name])
  assert any(reported["sampled"][name] != reported[name]
             for name in ("cumulative_reward", "interaction_length"))
