"""gin configuration: bindings reach the agent and the scenario, are recorded
in the run directory, change nothing on resume, and bad ones are one line."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys

import gin
import pytest

from tests.conftest import REPO_ROOT
import lerl_recsim
from lerl_recsim.agents import dqn, ppo
from lerl_recsim.experiments import comparison, gin_config, run_config, train
from lerl_recsim.experiments import compare as setup

BIN = pathlib.Path(sys.executable).parent
CONFIGS = REPO_ROOT / "configs"
TINY = ["--num_users=4", "--num_iterations=4", "--eval_interval=2",
        "--num_eval_sessions=4", "--num_items=40"]


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def run(command: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name, family", [("dqn.gin", dqn), ("ppo.gin", ppo)])
def test_example_files_write_out_the_reference_hyperparameters(name, family):
  bound = gin_config.parse([str(CONFIGS / name)], [])
  prefix = f"{family.__name__.rsplit('.', 1)[-1]}.train_eval."
  gin.clear_config()  # the class's own defaults
  defaults = dataclasses.asdict(family.Hyperparameters())
  assert {key[len(prefix):]: value for key, value in bound.items()} == defaults


def test_temper_file_and_bindings_build_the_scenario():
  gin_config.parse([str(CONFIGS / "temper.gin")],
                   ["TemperParams.initial_temper = 6",
                    "UserParams.satiation_decay = 0.9"])
  overrides = gin_config.scenario_overrides("interest_evolution")
  assert overrides == {"exit_rule": "temper", "max_session_length": 100,
                       "exit_params": {"initial_temper": 6, "step_cost": 1.0,
                                       "repeat_cost": 1.0},
                       "user_params": {"satiation_decay": 0.9}}
  config = lerl_recsim.make_env(num_users=2, **overrides).config
  assert config["exit_rule"] == "temper"
  assert config["exit_params"]["initial_temper"] == 6.0
  assert config["user_params"]["satiation_decay"] == 0.9


def test_no_bindings_leave_the_flags_overrides_as_before():
  gin_config.parse([], [])
  assert gin_config.scenario_overrides(
      "interest_evolution", "category_window:dorl",
      {"num_items": 40, "slate_size": None}) == {
          "num_items": 40, "exit_rule": "category_window",
          "exit_params": {"preset": "dorl"}}


def test_hyperparameter_bindings_reach_the_built_agent(tmp_path, monkeypatch):
  gin_config.parse([], ["dqn.train_eval.learning_rate = 1e-3",
                        "dqn.train_eval.gamma = 0.5"])
  built = []
  original = dqn.build_learner
  monkeypatch.setattr(dqn, "build_learner",
                      lambda env, chosen: built.append(original(env, chosen))
                      or built[-1])
  run_settings = run_config.RunConfig(
      agent="dqn", num_users=4, num_iterations=2, num_eval_sessions=4,
      scenario_overrides={"num_items": 40})
  summary = train.train_eval(run_settings, str(tmp_path))
  agent = built[0].agent
  assert agent._gamma == 0.5
  assert float(agent._optimizer.learning_rate.numpy()) == pytest.approx(1e-3)
  assert summary["config"]["hyperparameters"]["gamma"] == 0.5
  assert "dqn.train_eval.learning_rate = 0.001" in (
      tmp_path / "operative_config.gin").read_text()


@pytest.mark.parametrize("bindings, message", [
    (["Nothing.at_all = 1"], r"No configurable matching 'Nothing'.*"
     r"configurables: \['BudgetParams'"),
    (["dqn.train_eval.lr = 1"], r"doesn't have a parameter named 'lr'.*"
     r"parameters of dqn.train_eval: \['replay_capacity', 'batch_size', "
     r"'collect_steps_per_iteration', 'train_steps_per_iteration', "
     r"'initial_collect_steps', 'fc_layer_params', 'learning_rate'"),
    (["dqn.train_eval.learning_rate = 'fast'"],
     r"dqn.train_eval.learning_rate must be a number, got 'fast'"),
    (["dqn.train_eval.run = 1"], r"--gin_bindings 'dqn.train_eval.run = 1'"),
    (["TemperParams.initial_temper = "], r"Unable to parse value.*"
     r"expected CONFIGURABLE.PARAMETER = PYTHON_LITERAL"),
    (["DqnAgent.gamma = 0.5"], r"gin binds DqnAgent, which is not one of "
     r"lerl's configurables"),
])
def test_bad_bindings_are_named_with_what_is_accepted(bindings, message):
  with pytest.raises(ValueError, match=message):
    gin_config.parse([], bindings)


@pytest.mark.parametrize("bindings, exit_rule, flag_values, message", [
    (["ScenarioParams.num_items = 50"], None, {"num_items": 40},
     r"ScenarioParams.num_items is bound by gin and set by --num_items"),
    (["ScenarioParams.exit_rule = 'temper'"], "budget", {},
     r"ScenarioParams.exit_rule is bound by gin and set by --exit_rule"),
    (["CategoryWindowParams.window = 9"], "category_window:dorl", {},
     r"CategoryWindowParams.window is bound by gin and set by "
     r"--exit_rule=category_window:dorl"),
    (["UserParams.satiation_decay = 'slow'"], None, {},
     r"UserParams.satiation_decay must be a number, got 'slow'"),
])
def test_a_parameter_set_two_ways_or_badly_is_refused(bindings, exit_rule,
                                                       flag_values, message):
  gin_config.parse([], bindings)
  with pytest.raises(ValueError, match=message):
    overrides = gin_config.scenario_overrides("interest_evolution", exit_rule,
                                              flag_values)
    gin_config.check_scenario("interest_evolution", overrides)


def test_bindings_are_recorded_and_a_resume_with_others_is_refused(tmp_path):
  root = tmp_path / "run"
  command = [str(BIN / "lerl-train"), "--agent=dqn", "--exit_rule=temper",
             f"--root_dir={root}", *TINY,
             "--gin_bindings=TemperParams.initial_temper = 6",
             "--gin_bindings=dqn.train_eval.learning_rate = 1e-3"]
  first = run(command)
  assert first.returncode == 0, first.stderr
  config = json.loads((root / "config.json").read_text())
  assert config["gin_bindings"] == {"TemperParams.initial_temper": 6,
                                    "dqn.train_eval.learning_rate": 0.001}
  assert config["scenario"]["exit_params"]["initial_temper"] == 6.0
  operative = (root / "operative_config.gin").read_text()
  for line in ("TemperParams.initial_temper = 6", "ScenarioParams.num_items = 40",
               "dqn.train_eval.learning_rate = 0.001"):
    assert line in operative.splitlines(), line
  saved = (root / "config.json").read_text()
  refused = run(command[:-1] + ["--gin_bindings=dqn.train_eval.learning_rate "
                                "= 2e-3"])
  assert refused.returncode == 2
  lines = refused.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("lerl-train: error: ")
  assert f"{root / 'config.json'} has" in lines[0]
  assert "gin_bindings.dqn.train_eval.learning_rate: 0.001 -> 0.002" in lines[0]
  assert (root / "config.json").read_text() == saved


@pytest.mark.parametrize("flags, message", [
    (["--gin_bindings=dqn.train_eval.learning_rate = 'fast'"],
     "dqn.train_eval.learning_rate must be a number, got 'fast'"),
    (["--gin_file=/no/such.gin"], "--gin_file '/no/such.gin' is not a file"),
])
def test_a_bad_binding_exits_2_with_one_line(tmp_path, flags, message):
  outcome = run([str(BIN / "lerl-train"), "--agent=dqn",
                 f"--root_dir={tmp_path / 'run'}", *TINY, *flags])
  assert outcome.returncode == 2
  lines = outcome.stderr.strip().splitlines()
  assert len(lines) == 1 and message in lines[0], outcome.stderr
  assert not (tmp_path / "run").exists()


def test_compare_forwards_its_bindings_to_every_run(tmp_path):
  bound = gin_config.parse([], ["TemperParams.initial_temper = 6"])
  config, runs, _ = setup.plan(["random"], ["interest_evolution"],
                               ["temper", "category_window:dorl"], [], 1, 1,
                               "random", {"num_users": 4}, {"num_items": 40},
                               gin_bindings=bound)
  assert config["gin_bindings"] == {"TemperParams.initial_temper": 6}
  flags = setup.gin_flags(["x.gin"], ["TemperParams.initial_temper = 6"])
  for each in runs:
    command = setup.train_command(each, config, tmp_path, flags)
    assert command[-2:] == (f"--gin_file={pathlib.Path('x.gin').resolve()}",
                            "--gin_bindings=TemperParams.initial_temper = 6")
    assert f"--exit_rule={each.exit_rule.label}" in command
    assert "--num_items=40" in command


def test_compare_runs_children_with_its_bindings_and_refuses_others(tmp_path):
  output = tmp_path / "compare"
  command = [str(BIN / "lerl-compare"), "--agents=random",
             "--exit_rules=temper", "--num_seeds=1", "--num_users=4",
             "--reference=random",
             "--num_eval_sessions=4", "--num_items=40", "--planner_cache=",
             f"--output_dir={output}",
             "--gin_bindings=TemperParams.initial_temper = 6"]
  first = run(command)
  assert first.returncode == 0, first.stderr
  child = comparison.ComparisonRun("interest_evolution",
                                   comparison.ExitRuleChoice("temper"),
                                   comparison.Method("random"), 0)
  config = json.loads((child.directory(output) / "config.json").read_text())
  assert config["gin_bindings"] == {"TemperParams.initial_temper": 6}
  assert config["scenario"]["exit_params"]["initial_temper"] == 6.0
  refused = run(command[:-1] + ["--gin_bindings=TemperParams.initial_temper "
                                "= 7"])
  assert refused.returncode == 2
  assert ("gin_bindings.TemperParams.initial_temper: 6 -> 7"
          in refused.stderr), refused.stderr
