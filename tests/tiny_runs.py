"""Tiny training runs (a few iterations of 8 users on 40 items) and the
checks every finished run must pass, for the tests of agents and of
resuming runs."""

import json

import numpy as np

from lerl_recsim import metrics
from lerl_recsim.experiments import run_config


TINY = {"num_items": 40}


def tiny_run(agent, **changes):
  options = dict(agent=agent, num_users=8, num_iterations=6,
                 num_eval_sessions=12, eval_interval=3, checkpoint_interval=3,
                 log_interval=3, planner="heuristic", scenario_overrides=TINY)
  options.update(changes)
  return run_config.RunConfig(**options)


# Agents whose whole run the kill-and-resume test (tests/experiments/
# test_resume.py) trains and checks; the every-agent test trains the others.
RESUMED_AGENTS = {"heuristic_dqn": dict(replan_every=1), "myopic": {}, "ppo": {}}


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
