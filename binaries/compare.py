r"""Compares agents over seeds, scenarios and exit rules: a table and plots.

  lerl-compare --agents=lerl,dqn,random --planners=embedded,heuristic \
      --exit_rules=satisfaction,category_window:dorl --num_seeds=5 \
      --num_iterations=300 --output_dir=runs/compare

Every (scenario, exit rule, agent [+ planner], seed) is an ordinary
`lerl-train` run in its own process, in
OUTPUT_DIR/runs/SCENARIO/EXIT_RULE/METHOD/seed_N, with its output in
OUTPUT_DIR/logs. Running the same command again reuses finished runs and
resumes unfinished ones; a run that crashes is reported and the others go
on. With --executor=ray the same runs are Ray tasks on a cluster
(--ray_address; every node must see OUTPUT_DIR at the same path), with the
same directories, logs, resumption and results. Then results.md,
results.csv and PNG plots are written to --results_dir (default
OUTPUT_DIR). All input is checked before any run starts; the
comparison's configuration, its gin bindings included, is kept in
OUTPUT_DIR/comparison.json and a different one is refused there; every run
gets the same --gin_file and --gin_bindings.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import signal
import sys
from typing import Sequence

from absl import app, flags, logging

from lerl_recsim.binaries import cli  # first: a quiet start
from lerl_recsim.binaries import run_flags
from lerl_recsim.experiments import compare as setup
from lerl_recsim.experiments import gin_config, ray_sweep, run_config, sweep
from lerl_recsim.scenarios import exit_rules, registry

FLAGS = flags.FLAGS
EXECUTORS = ("local", "ray")
flags.DEFINE_list("agents", None,
                  f"Agents: {', '.join(run_config.AGENTS)}; a planning agent "
                  "may pin its backend: lerl_ppo+embedded.", required=True)
flags.DEFINE_list("scenarios", ["interest_evolution"],
                  f"Scenarios: {', '.join(registry.SCENARIOS)}.")
flags.DEFINE_list("exit_rules", ["satisfaction"],
                  f"Exit rules ({', '.join(exit_rules.EXIT_RULES)}), each "
                  "optionally with a preset: category_window:dorl.")
flags.DEFINE_list("planners", [run_config.DEFAULT_PLANNER],
                  "Planner backends of the agents that plan (lerl, lerl_ppo): "
                  "embedded, heuristic, gguf:PATH, openai:MODEL, ollama:MODEL; "
                  "each such agent runs once per backend.")
flags.DEFINE_integer("num_seeds", 5, "Seeds per method: first_seed .. "
                     "first_seed+num_seeds-1.")
flags.DEFINE_integer("first_seed", 0,
                     "First seed of every method: 100 and up for development "
                     "runs that choose budgets or settings, 0 for results.")
flags.DEFINE_string("output_dir", None, "Directory of the comparison's runs.",
                    required=True)
flags.DEFINE_string("results_dir", None,
                    "Where the table and plots go (default: --output_dir).")
flags.DEFINE_enum("executor", "local", EXECUTORS,
                  "Where runs execute: local (processes on this machine, "
                  "--parallel at once) or ray (Ray tasks on --ray_address).")
flags.DEFINE_integer("parallel", 1, "Runs executed at once (processes) by "
                     "the local executor.")
flags.DEFINE_string("ray_address", None,
                    "Ray cluster of --executor=ray (HOST:PORT of its head); "
                    "default: a local Ray instance started for the sweep. "
                    "--output_dir must be storage every node sees.")
flags.DEFINE_integer("cpus_per_run", None,
                     "CPUs each run asks Ray for, and its thread limit "
                     "(default: the local executor's threads per run at "
                     "--parallel on this machine).")
flags.DEFINE_string("reference", "dqn",
                    "Method the others are tested against: an agent, or "
                    "AGENT+PLANNER for an agent compared with several planners.")
# Every run's settings, lerl-train's defaults except the planner mode:
# comparisons wait for LLM planners, so that their tables repeat exactly.
run_flags.define(setup.TRAIN_SETTINGS, planner_mode="wait")
run_flags.define_scenario_flags()
flags.DEFINE_string("planner_cache", "planner_cache.sqlite",
                    "SQLite cache of the LLM planners' answers, shared by all "
                    "runs (greedy decoding makes a cached answer the one the "
                    "model would give); relative to --output_dir; empty for "
                    "none.")
flags.adopt_module_key_flags(run_flags)
flags.adopt_module_key_flags(gin_config)


def make_executor(jobs: Sequence[sweep.Job]) -> sweep.Executor:
  """The executor the flags choose; Ray's settings only go with Ray."""
  if FLAGS.executor == "local":
    given = [f"--{name}" for name in ("ray_address", "cpus_per_run")
             if getattr(FLAGS, name) is not None]
    if given:
      raise ValueError(f"{' and '.join(given)}: only with --executor=ray")
    return sweep.Sweep(jobs, FLAGS.parallel, logging.info)
  cpus = FLAGS.cpus_per_run
  return ray_sweep.RaySweep(
      jobs, sweep.threads_per_job(FLAGS.parallel) if cpus is None else cpus,
      logging.info, FLAGS.ray_address)


def main(argv: Sequence[str]) -> None:
  del argv
  # A terminated sweep stops its runs (they resume on the next call).
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
  output_dir = pathlib.Path(FLAGS.output_dir)
  try:
    bindings = gin_config.parse(FLAGS.gin_file, FLAGS.gin_bindings)
    config, runs, reference = setup.plan(
        FLAGS.agents, FLAGS.scenarios, FLAGS.exit_rules, FLAGS.planners,
        FLAGS.num_seeds, FLAGS.parallel, FLAGS.reference,
        run_flags.values(setup.TRAIN_SETTINGS), run_flags.scenario_values(),
        FLAGS.planner_cache, bindings, FLAGS.first_seed)
    gin = setup.gin_flags(FLAGS.gin_file, FLAGS.gin_bindings)
    executor = make_executor([
        sweep.Job(run.name, setup.train_command(run, config, output_dir, gin),
                  run.directory(output_dir), run.log(output_dir))
        for run in runs])
    lock = setup.claim(output_dir, config, logging.info)
  except (ValueError, ImportError, FileNotFoundError) as error:
    raise app.UsageError(str(error)) from None
  outcomes = executor.run()
  written = setup.write_results(
      runs, config, reference, output_dir,
      pathlib.Path(FLAGS.results_dir or output_dir),
      "lerl-compare " + shlex.join(sys.argv[1:]))
  os.close(lock)
  logging.info("wrote %s", ", ".join(map(str, written)))
  failed = [o for o in outcomes if o.status == "failed"]
  if failed:
    logging.error("%d run(s) failed (rerun the same command to retry them): %s",
                  len(failed), "; ".join(f"{o.job.name} (log {o.job.log})"
                                         for o in failed))
    sys.exit(1)


def run() -> None:
  """Console-script entry point (`lerl-compare`)."""
  cli.run(main, __name__)


if __name__ == "__main__":
  run()
