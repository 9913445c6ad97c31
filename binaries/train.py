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
from lerl_recsim.binaries import flag_values
from lerl_recsim.experiments import gin_config, run_config, train
from lerl_recsim.scenarios import registry

FLAGS = flags.FLAGS
flags.DEFINE_string("agent", "lerl", "One of: " + ", ".join(
    f"{name} ({spec.doc})" for name, spec in run_config.AGENTS.items()))
flags.DEFINE_string("scenario", "interest_evolution",
                    f"Scenario: {', '.join(sorted(registry.SCENARIOS))}.")
flags.DEFINE_string("exit_rule", None, "Exit rule (scenario default if "
                    "unset), optionally with a preset: category_window:dorl.")
flags.DEFINE_string("planner", run_config.DEFAULT_PLANNER,
                    "Planner backend for lerl/lerl_ppo: embedded, gguf:PATH, "
                    "openai:MODEL, ollama:MODEL, heuristic.")
flags.DEFINE_integer("replan_every", run_config.RunConfig.replan_every,
                     "K: steps between a user's plans (1 is LERL).")
flags.DEFINE_string("planner_cache", None, "SQLite file caching the LLM "
                    "planner's answers across runs (needs langchain-community).")
flags.DEFINE_enum("planner_mode", run_config.RunConfig.planner_mode,
                  run_config.PLANNER_MODES,
                  "background: training never waits for the LLM (users it "
                  "has not answered yet get the heuristic plan meanwhile); "
                  "wait: training waits, and the run repeats exactly. "
                  "Evaluation plans in the same mode.")
flags.DEFINE_bool("stop_when_levelled", False,
                  "End training at the first evaluation at which the learning "
                  "curve has levelled off (the plateau rule), or after "
                  "--num_iterations.")
flags.DEFINE_integer("num_users", 64, "Simultaneous training users.")
flags.DEFINE_integer("num_iterations", None, "Training iterations (default: "
                     "the agent family's convergence budget, " +
                     run_config.budgets_text() + ").")
flags.DEFINE_integer("num_eval_sessions", 500, "Fresh users per evaluation.")
flags.DEFINE_integer("eval_interval", None, "Iterations between evaluations "
                     f"(default: {run_config.CURVE_POINTS} per run).")
flags.DEFINE_integer("checkpoint_interval", None, "Iterations between "
                     "checkpoints (default: as --eval_interval).")
flags.DEFINE_integer("log_interval", None, "Iterations between progress lines "
                     "(default: as --eval_interval).")
flags.DEFINE_integer("seed", 0, "Seed of environments, networks, exploration.")
flags.DEFINE_string("root_dir", None, "Run directory.", required=True)
flags.DEFINE_integer("num_items", None, "Catalogue size (ScenarioParams).")
flags.DEFINE_integer("slate_size", None, "Slate size (ScenarioParams).")
flags.DEFINE_integer("max_session_length", None,
                     "Session cap (ScenarioParams; the rule's if unset).")
flags.DEFINE_string("data_dir", None, "Data directory of data-driven scenarios.")
flags.adopt_module_key_flags(gin_config)


def main(argv: Sequence[str]) -> None:
  del argv
  bindings = gin_config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
  overrides = gin_config.scenario_overrides(
      FLAGS.scenario, FLAGS.exit_rule,
      {name: getattr(FLAGS, name) for name in
       (*gin_config.SCENARIO_FLAGS, "data_dir")})
  gin_config.record_scenario(FLAGS.scenario, overrides)
  run = run_config.RunConfig(
      agent=FLAGS.agent, scenario=FLAGS.scenario,
      scenario_overrides=overrides,
      planner=FLAGS.planner, replan_every=FLAGS.replan_every,
      num_users=FLAGS.num_users, num_iterations=FLAGS.num_iterations,
      num_eval_sessions=FLAGS.num_eval_sessions,
      eval_interval=FLAGS.eval_interval,
      checkpoint_interval=FLAGS.checkpoint_interval,
      log_interval=FLAGS.log_interval, seed=FLAGS.seed,
      planner_cache=FLAGS.planner_cache, planner_mode=FLAGS.planner_mode,
      stop_when_levelled=FLAGS.stop_when_levelled, gin_bindings=bindings)
  summary = train.train_eval(run, FLAGS.root_dir)
  print(flag_values.headline(summary))


def run() -> None:
  """Console-script entry point (`lerl-train`)."""
  cli.run(main, __name__)


if __name__ == "__main__":
  run()
