r"""Trains and evaluates one agent; the LERL entry point.

  lerl-train --agent=lerl --root_dir=runs/lerl
  python -m lerl_recsim.binaries.train --agent=dqn --exit_rule=temper \
      --num_iterations=2000 --root_dir=runs/dqn_temper
  lerl-train --agent=dqn --gin_file=configs/dqn.gin \
      --gin_bindings='TemperParams.initial_temper = 10' --root_dir=runs/t10

Agent hyper-parameters (`dqn.train_eval.learning_rate`, ...) and the
scenario's parameters (`ScenarioParams`, `UserParams`, the exit rules'
`TemperParams`, ...) are set with --gin_file and --gin_bindings.

Writes TensorBoard summaries under ROOT_DIR/train and ROOT_DIR/eval,
checkpoints under ROOT_DIR/train/checkpoints, the greedy policy as a
SavedModel under ROOT_DIR/policy and the final evaluation (fresh users, one
session each) in ROOT_DIR/summary.json, beside the resolved configuration
in ROOT_DIR/config.json and gin's operative configuration (every
configurable value the run used) in ROOT_DIR/operative_config.gin. Started
again with the same --root_dir, a killed run resumes from its last
checkpoint; a finished run is reused; another configuration (gin bindings
included) is refused.
"""

from __future__ import annotations

from typing import Sequence

from absl import flags

from lerl_recsim.binaries import cli  # first: a quiet start
from lerl_recsim.binaries import flag_values, run_flags
from lerl_recsim.experiments import gin_config, run_config, train
from lerl_recsim.scenarios import registry

FLAGS = flags.FLAGS
# Trained per run: what lerl-compare passes to every run.
RUN_SETTINGS = ("planner", "replan_every", "planner_cache", "planner_mode",
                "stop_when_levelled", "num_users", "num_iterations",
                "num_eval_sessions", "eval_interval", "checkpoint_interval",
                "log_interval", "seed", "intra_op_threads")
flags.DEFINE_string("agent", "lerl", "One of: " + ", ".join(
    f"{name} ({spec.doc})" for name, spec in run_config.AGENTS.items()))
flags.DEFINE_string("scenario", "interest_evolution",
                    f"Scenario: {', '.join(sorted(registry.SCENARIOS))}.")
flags.DEFINE_string("exit_rule", None, "Exit rule (scenario default if "
                    "unset), optionally with a preset: category_window:dorl.")
run_flags.define(RUN_SETTINGS)
run_flags.define_scenario_flags()
flags.DEFINE_string("root_dir", None, "Run directory.", required=True)
flags.adopt_module_key_flags(run_flags)
flags.adopt_module_key_flags(gin_config)


def main(argv: Sequence[str]) -> None:
  del argv
  bindings = gin_config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
  overrides = gin_config.scenario_overrides(FLAGS.scenario, FLAGS.exit_rule,
                                            run_flags.scenario_values())
  gin_config.record_scenario(FLAGS.scenario, overrides)
  run = run_config.RunConfig(
      agent=FLAGS.agent, scenario=FLAGS.scenario, scenario_overrides=overrides,
      gin_bindings=bindings, **run_flags.values(RUN_SETTINGS))
  summary = train.train_eval(run, FLAGS.root_dir)
  print(flag_values.headline(summary))


def run() -> None:
  """Console-script entry point (`lerl-train`)."""
  cli.run(main, __name__)


if __name__ == "__main__":
  run()
