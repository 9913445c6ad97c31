"""Runs resume: a finished run is reused, a killed one continues from its
checkpoint (environment, planner, replay and random draws included) and
ends as the uninterrupted run, with the earlier processes' wall time."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from lerl_recsim import metrics, planner_environment
from lerl_recsim.agents import learners
from lerl_recsim.experiments import checkpoints, runner, train
from tests.tiny_runs import (RESUMED_AGENTS, assert_trained_and_wrote_results,
                             tiny_run)


def test_finished_run_is_reused_and_other_configuration_refused(tmp_path):
  first = train.train_eval(tiny_run("dqn"), str(tmp_path))
  before = (tmp_path / "summary.json").read_text()
  again = train.train_eval(tiny_run("dqn"), str(tmp_path))
  assert again == json.loads(before)
  with pytest.raises(ValueError, match="holds a run with a different configuration"):
    train.train_eval(tiny_run("dqn", seed=5), str(tmp_path))
  assert (tmp_path / "summary.json").read_text() == before
  del first


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
