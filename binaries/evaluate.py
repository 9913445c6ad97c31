r"""Evaluates a saved policy on any scenario, exit rule and planner.

  lerl-eval --load_dir=runs/lerl --output=runs/lerl/eval_temper.json \
      --exit_rule=temper --planner=heuristic
  python -m lerl_recsim.binaries.evaluate --load_dir=bundles/lerl \
      --output=eval.json --planner=none --num_eval_sessions=1000

--load_dir is a training run (lerl-train's --root_dir) or a serving bundle
(lerl-export's --export_dir). Unset flags take the source's settings: its
scenario and overrides (an --exit_rule other than the source's drops the
source's exit parameters), its planner backend and replan interval.
--gin_file and --gin_bindings change the scenario's parameters as for
lerl-train (e.g. 'TemperParams.initial_temper = 10'). Each of
--num_eval_sessions fresh users runs one session with the greedy policy;
users are seeded from --seed + 1000003, as lerl-train's evaluation users.
The summary (mean and ci95 per metric, num_sessions, resolved config,
planner counts) goes to --output, which must not exist yet.
"""

from __future__ import annotations

from typing import Sequence

from absl import flags

from lerl_recsim.binaries import cli  # first: a quiet start
from lerl_recsim.binaries import flag_values, run_flags
from lerl_recsim.experiments import evaluate, gin_config
from lerl_recsim.scenarios import registry

FLAGS = flags.FLAGS
flags.DEFINE_string("load_dir", None,
                    "A training run directory or a serving bundle.",
                    required=True)
flags.DEFINE_string("output", None, "Summary JSON path; must not exist.",
                    required=True)
flags.DEFINE_string("scenario", None, "Scenario (the source's if unset): "
                    f"{', '.join(sorted(registry.SCENARIOS))}.")
flags.DEFINE_string("exit_rule", None, "Exit rule (the source's if unset), "
                    "optionally with a preset: category_window:dorl.")
flags.DEFINE_string("planner", None,
                    "Planner backend (the source's if unset): embedded, "
                    "gguf:PATH, openai:MODEL, ollama:MODEL, heuristic, or "
                    "none for no planner.")
flags.DEFINE_integer("replan_every", None,
                     "K: steps between a user's plans (the source's if unset).")
run_flags.define(("num_eval_sessions", "seed"), help_texts={
    "num_eval_sessions": "Fresh users, one session each.",
    "seed": "Seeds the evaluation users and the planner."})
flags.adopt_module_key_flags(run_flags)
flags.adopt_module_key_flags(gin_config)


def main(argv: Sequence[str]) -> None:
  del argv
  gin_config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
  spec = evaluate.load_source(FLAGS.load_dir)[0]
  scenario = FLAGS.scenario or spec["source"]["scenario"]
  overrides = gin_config.scenario_overrides(
      scenario, FLAGS.exit_rule,
      default_exit_rule=spec["scenario"]["config"]["exit_rule"])
  summary = evaluate.evaluate(
      FLAGS.load_dir, FLAGS.output, scenario=FLAGS.scenario,
      overrides=overrides, planner=FLAGS.planner,
      replan_every=FLAGS.replan_every,
      num_eval_sessions=FLAGS.num_eval_sessions, seed=FLAGS.seed)
  print(flag_values.headline(summary))


def run() -> None:
  """Console-script entry point (`lerl-eval`)."""
  cli.run(main, __name__)


if __name__ == "__main__":
  run()
