"""Progress lines: one per window of iterations, with the window's mean loss."""

import logging
import types

import pytest

from lerl_recsim import tf_environment
from lerl_recsim.experiments import progress, run_config


@pytest.fixture(name="lines")
def lines_fixture(caplog):
  caplog.set_level(logging.INFO, logger="absl")
  return lambda: [r.getMessage() for r in caplog.records
                  if r.getMessage().startswith("iteration ")]


def test_a_line_per_window_with_the_windows_mean_loss(lines):
  run = run_config.RunConfig(agent="dqn", num_iterations=5, log_interval=2)
  env = tf_environment.make_tf_env(num_users=2, seed=0, num_items=30)
  learner = types.SimpleNamespace(user_steps=0)
  log = progress.ProgressLog(run, learner, env, first_iteration=0)
  for step, loss in enumerate([1.0, 3.0, 10.0, 20.0, 7.0], start=1):
    learner.user_steps += 2
    log.iteration_done(step, loss)
  # Windows end at iterations 2 and 4 and at the last one, 5.
  logged = lines()
  assert [line.split(" |")[0] for line in logged] == [
      "iteration 2/5", "iteration 4/5", "iteration 5/5"]
  assert [line.split("loss ")[1] for line in logged] == [
      "2.0000", "15.0000", "7.0000"]
  # A flat environment has no planner: no LLM share.
  assert not any("LLM plans" in line for line in logged)
