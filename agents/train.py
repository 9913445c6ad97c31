r"""Trains and evaluates one agent; the LERL entry point.

  lerl-train --agent=lerl --root_dir=runs/lerl
  python -m lerl_recsim.agents.train --agent=dqn --exit_rule=temper \
      --num_iterations=2000 --root_dir=runs/dqn_temper

Writes TensorBoard summaries under ROOT_DIR/train and ROOT_DIR/eval,
checkpoints under ROOT_DIR/train/checkpoints, the greedy policy as a
SavedModel under ROOT_DIR/policy and the final evaluation (fresh users, one
session each) in ROOT_DIR/summary.json, beside the resolved configuration
in ROOT_DIR/config.json. Started again with the same --root_dir, a killed
run resumes from its last checkpoint; a finished run is reused.
"""

from __future__ import annotations

from typing import Any, Sequence

from absl import flags

from lerl_recsim.agents import binary  # first: a quiet start
from lerl_recsim.agents import flag_values, run_config, training
from lerl_recsim.scenarios import registry

FLAGS = flags.FLAGS
flags.DEFINE_string("agent", "lerl", "One of: " + ", ".join(
    f"{name} ({spec.doc})" for name, spec in run_config.AGENTS.items()))
flags.DEFINE_string("scenario", "interest_evolution",
                    f"Scenario: {', '.join(sorted(registry.SCENARIOS))}.")
flags.DEFINE_string("exit_rule", None, "Exit rule (scenario default if unset).")
flags.DEFINE_string("exit_params", None, "Exit-rule parameters as JSON, e.g. "
                    '\'{"preset": "dorl"}\'.')
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
                     "the agent family's convergence budget, " + ", ".join(
                         f"{family} {budget:,}" for family, budget in
                         run_config.CONVERGENCE_BUDGETS.items()
                         if family != "scripted") + ").")
flags.DEFINE_integer("num_eval_sessions", 500, "Fresh users per evaluation.")
flags.DEFINE_integer("eval_interval", None, "Iterations between evaluations "
                     f"(default: {run_config.CURVE_POINTS} per run).")
flags.DEFINE_integer("checkpoint_interval", None, "Iterations between "
                     "checkpoints (default: as --eval_interval).")
flags.DEFINE_integer("log_interval", None, "Iterations between progress lines "
                     "(default: as --eval_interval).")
flags.DEFINE_integer("seed", 0, "Seed of environments, networks, exploration.")
flags.DEFINE_string("root_dir", None, "Run directory.", required=True)
flags.DEFINE_integer("num_items", None, "Scenario override: catalogue size.")
flags.DEFINE_integer("slate_size", None, "Scenario override: slate size.")
flags.DEFINE_integer("max_session_length", None, "Scenario override: cap.")
flags.DEFINE_string("data_dir", None, "Data directory of data-driven scenarios.")
flags.DEFINE_string("scenario_overrides", None,
                    "Further scenario overrides as JSON, e.g. "
                    '\'{"satiation_decay": 0.9}\'.')
flags.DEFINE_string("hparams", None, "Agent-family hyper-parameters as JSON, "
                    'e.g. \'{"learning_rate": 0.0005}\'.')


def scenario_overrides_from_flags() -> dict[str, Any]:
  overrides = flag_values.json_object("scenario_overrides",
                                       FLAGS.scenario_overrides)
  for name in ("exit_rule", "num_items", "slate_size", "max_session_length",
               "data_dir"):
    if getattr(FLAGS, name) is not None:
      overrides[name] = getattr(FLAGS, name)
  exit_params = flag_values.json_object("exit_params", FLAGS.exit_params)
  if exit_params:
    overrides["exit_params"] = exit_params
  return overrides


def main(argv: Sequence[str]) -> None:
  del argv
  run = run_config.RunConfig(
      agent=FLAGS.agent, scenario=FLAGS.scenario,
      scenario_overrides=scenario_overrides_from_flags(),
      planner=FLAGS.planner, replan_every=FLAGS.replan_every,
      num_users=FLAGS.num_users, num_iterations=FLAGS.num_iterations,
      num_eval_sessions=FLAGS.num_eval_sessions,
      eval_interval=FLAGS.eval_interval,
      checkpoint_interval=FLAGS.checkpoint_interval,
      log_interval=FLAGS.log_interval, seed=FLAGS.seed,
      planner_cache=FLAGS.planner_cache, planner_mode=FLAGS.planner_mode,
      stop_when_levelled=FLAGS.stop_when_levelled)
  hparams = flag_values.json_object("hparams", FLAGS.hparams)
  summary = training.train_eval(run, FLAGS.root_dir, hparams)
  print(flag_values.headline(summary))


def run() -> None:
  """Console-script entry point (`lerl-train`)."""
  binary.run(main, __name__)


if __name__ == "__main__":
  run()
