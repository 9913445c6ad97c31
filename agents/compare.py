r"""Compares agents over seeds, scenarios and exit rules: a table and plots.

  lerl-compare --agents=lerl,dqn,random --planners=embedded,heuristic \
      --exit_rules=satisfaction,category_window:dorl --num_seeds=5 \
      --num_iterations=300 --output_dir=runs/compare

Every (scenario, exit rule, agent [+ planner], seed) is an ordinary
`lerl-train` run in its own process, in
OUTPUT_DIR/runs/SCENARIO/EXIT_RULE/METHOD/seed_N, with its output in
OUTPUT_DIR/logs. Running the same command again reuses finished runs and
resumes unfinished ones; a run that crashes is reported and the others go
on. Then results.md, results.csv and PNG plots are written to --results_dir
(default OUTPUT_DIR). All input is checked before any run starts; the
comparison's configuration is kept in OUTPUT_DIR/comparison.json and a
different one is refused there.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import shlex
import signal
import sys
from typing import Any, Sequence

from absl import app, flags, logging

import lerl_recsim
from lerl_recsim import results
from lerl_recsim.agents import comparison, comparison_plots, run_config, sweep
from lerl_recsim.planner import backends
from lerl_recsim.scenarios import exit_rules, registry

FLAGS = flags.FLAGS
flags.DEFINE_list("agents", None, f"Agents: {', '.join(run_config.AGENTS)}.",
                  required=True)
flags.DEFINE_list("scenarios", ["interest_evolution"],
                  f"Scenarios: {', '.join(registry.SCENARIOS)}.")
flags.DEFINE_list("exit_rules", ["satisfaction"],
                  f"Exit rules ({', '.join(exit_rules.EXIT_RULES)}), each "
                  "optionally with a preset: category_window:dorl.")
flags.DEFINE_list("planners", [run_config.DEFAULT_PLANNER],
                  "Planner backends of the agents that plan (lerl, lerl_ppo): "
                  "embedded, heuristic, gguf:PATH, openai:MODEL, ollama:MODEL; "
                  "each such agent runs once per backend.")
flags.DEFINE_integer("num_seeds", 5, "Seeds per method: 0 .. num_seeds-1.")
flags.DEFINE_integer("num_iterations", 1000, "Training iterations per run.")
flags.DEFINE_integer("num_eval_sessions", 500, "Fresh users per evaluation.")
flags.DEFINE_string("output_dir", None, "Directory of the comparison's runs.",
                    required=True)
flags.DEFINE_string("results_dir", None,
                    "Where the table and plots go (default: --output_dir).")
flags.DEFINE_integer("parallel", 1, "Runs executed at once (processes).")
flags.DEFINE_string("reference", "dqn",
                    "Method the others are tested against: an agent, or "
                    "AGENT+PLANNER for an agent compared with several planners.")
flags.DEFINE_integer("num_users", 64, "Simultaneous training users per run.")
flags.DEFINE_integer("eval_interval", 500, "Iterations between evaluations.")
flags.DEFINE_integer("checkpoint_interval", 200,
                     "Iterations between checkpoints.")
flags.DEFINE_integer("log_interval", 100, "Iterations between progress lines.")
flags.DEFINE_integer("replan_every", run_config.RunConfig.replan_every,
                     "K: steps between a user's plans.")
flags.DEFINE_integer("num_items", None, "Scenario override: catalogue size.")
flags.DEFINE_integer("slate_size", None, "Scenario override: slate size.")
flags.DEFINE_integer("max_session_length", None, "Scenario override: cap.")
flags.DEFINE_string("data_dir", None, "Data directory of data-driven scenarios.")
flags.DEFINE_string("scenario_overrides", None,
                    "Further scenario overrides as JSON (not the exit rule).")

TRAIN_SETTINGS = ("num_iterations", "num_eval_sessions", "num_users",
                  "eval_interval", "checkpoint_interval", "log_interval",
                  "replan_every")
SCENARIO_FLAGS = ("num_items", "slate_size", "max_session_length", "data_dir")


def check_unique(flag: str, values: Sequence[str]) -> None:
  if not values:
    raise ValueError(f"--{flag} is empty; give at least one name")
  repeated = sorted({v for v in values if values.count(v) > 1})
  if repeated:
    raise ValueError(f"--{flag} lists {repeated} more than once")


def check_known(flag: str, values: Sequence[str], known: Sequence[str]) -> None:
  check_unique(flag, values)
  unknown = [v for v in values if v not in known]
  if unknown:
    raise ValueError(f"--{flag}: unknown {unknown}; accepted: {sorted(known)}")


def check_planner(backend: str) -> None:
  """Fails on a backend string no run could use, before any run starts."""
  kind, _, argument = backend.partition(":")
  if backend == "heuristic" or (kind in ("openai", "ollama") and argument):
    return
  if backend == "embedded":
    backends.embedded_model_path()
  elif kind == "gguf" and argument:
    if not os.path.isfile(argument):
      raise ValueError(f"--planners: {backend!r} names no file ({argument!r})")
  else:
    raise ValueError(
        f"--planners: unknown backend {backend!r}; expected embedded, "
        "heuristic, gguf:PATH, openai:MODEL or ollama:MODEL")


def parse_overrides(text: str | None, flag_values: dict[str, Any]
                    ) -> dict[str, Any]:
  try:
    overrides = json.loads(text) if text else {}
  except json.JSONDecodeError as error:
    raise ValueError(f"--scenario_overrides is not valid JSON ({error}): "
                     f"{text!r}") from None
  if not isinstance(overrides, dict):
    raise ValueError(f"--scenario_overrides must be a JSON object, got {text!r}")
  fixed = sorted({"exit_rule", "exit_params"} & set(overrides))
  if fixed:
    raise ValueError(f"--scenario_overrides sets {fixed}; choose exit rules "
                     "with --exit_rules")
  overrides.update({k: v for k, v in flag_values.items() if v is not None})
  return overrides


def plan(agents: Sequence[str], scenarios: Sequence[str],
         exit_rule_names: Sequence[str], planners: Sequence[str],
         num_seeds: int, parallel: int, reference: str,
         train: dict[str, int], scenario_overrides: dict[str, Any]
         ) -> tuple[dict[str, Any], list[comparison.ComparisonRun],
                    comparison.Method]:
  """Checks every input and expands the grid of runs.

  Returns the comparison's configuration (what comparison.json holds), its
  runs in execution order and the reference method. Raises ValueError (or
  ImportError for a missing planner model) naming the bad value.
  """
  check_known("agents", agents, list(run_config.AGENTS))
  check_known("scenarios", scenarios, list(registry.SCENARIOS))
  check_unique("exit_rules", exit_rule_names)
  rules = [comparison.ExitRuleChoice.parse(text) for text in exit_rule_names]
  for rule in rules:
    if rule.name not in exit_rules.EXIT_RULES:
      raise ValueError(f"--exit_rules: unknown exit rule {rule.name!r} in "
                       f"{rule.label!r}; accepted: {sorted(exit_rules.EXIT_RULES)}")
    exit_rules.resolve_exit_rule(rule.name, rule.params, None)
  planned = [a for a in agents if run_config.AGENTS[a].planner == "flag"]
  if planned:
    check_unique("planners", planners)
    for backend in planners:
      check_planner(backend)
  for name, value in (("num_seeds", num_seeds), ("parallel", parallel)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"--{name} must be an int >= 1, got {value!r}")
  methods = [comparison.Method(a, p) for a in agents
             for p in (planners if a in planned else [None])]
  runs = comparison.grid(scenarios, rules, methods, num_seeds)
  for scenario in scenarios:
    for rule in rules:
      overrides = {**scenario_overrides, "exit_rule": rule.name,
                   "exit_params": rule.params}
      registry.build_scenario(scenario, num_users=1, seed=0, **overrides)
      for method in methods:
        run_config.RunConfig(
            agent=method.agent, scenario=scenario, scenario_overrides=overrides,
            planner=method.planner or run_config.DEFAULT_PLANNER, **train)
  directories = [run.relative_path for run in runs]
  if len(set(directories)) != len(directories):
    raise ValueError("two methods map to one run directory; planner backends "
                     f"{list(planners)} differ only in characters that paths "
                     "cannot hold")
  config = {"agents": list(agents), "planners": list(planners) if planned else [],
            "scenarios": list(scenarios),
            "exit_rules": [rule.label for rule in rules],
            "num_seeds": num_seeds, "train": dict(train),
            "scenario_overrides": scenario_overrides,
            "lerl_recsim_version": lerl_recsim.__version__}
  return config, runs, comparison.resolve_reference(reference, methods)


def train_command(run: comparison.ComparisonRun, config: dict[str, Any],
                  output_dir: pathlib.Path) -> tuple[str, ...]:
  """The `lerl-train` invocation of one run."""
  command = [sys.executable, "-m", "lerl_recsim.agents.train",
             f"--agent={run.method.agent}", f"--scenario={run.scenario}",
             f"--exit_rule={run.exit_rule.name}", f"--seed={run.seed}",
             f"--root_dir={run.directory(output_dir)}"]
  command += [f"--{name}={value}" for name, value in config["train"].items()]
  if run.exit_rule.params:
    command.append(f"--exit_params={json.dumps(run.exit_rule.params)}")
  if run.method.planner is not None:
    command.append(f"--planner={run.method.planner}")
  if config["scenario_overrides"]:
    command.append(
        f"--scenario_overrides={json.dumps(config['scenario_overrides'])}")
  return tuple(command)


def lock(output_dir: pathlib.Path) -> int:
  """Holds OUTPUT_DIR/comparison.lock while this process lives."""
  descriptor = os.open(output_dir / "comparison.lock", os.O_RDWR | os.O_CREAT)
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    raise ValueError(f"another lerl-compare is running in {output_dir}; wait "
                     "for it or stop it first") from None
  return descriptor


def write_results(runs: Sequence[comparison.ComparisonRun],
                  config: dict[str, Any], reference: comparison.Method,
                  output_dir: pathlib.Path, results_dir: pathlib.Path
                  ) -> list[pathlib.Path]:
  """results.md, results.csv and the plots, from the runs that finished."""
  rows = comparison.build_table(runs, output_dir, reference)
  train = config["train"]
  header = [
      f"Produced by lerl-recsim {lerl_recsim.__version__} with:",
      "", "```", "lerl-compare " + shlex.join(sys.argv[1:]), "```", "",
      f"{config['num_seeds']} seeds per method; {train['num_iterations']} "
      f"training iterations of {train['num_users']} users; "
      f"{train['num_eval_sessions']} evaluation sessions per run.",
  ]
  results_dir.mkdir(parents=True, exist_ok=True)
  markdown = results_dir / "results.md"
  markdown.write_text(comparison.format_markdown(rows, reference, header))
  table = results_dir / "results.csv"
  table.write_text(comparison.format_csv(rows, reference))
  return [markdown, table,
          *comparison_plots.write_all(runs, rows, output_dir, results_dir)]


def main(argv: Sequence[str]) -> None:
  del argv
  logging.set_verbosity(logging.INFO)
  # A terminated sweep stops its runs (they resume on the next call).
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
  output_dir = pathlib.Path(FLAGS.output_dir)
  try:
    overrides = parse_overrides(
        FLAGS.scenario_overrides,
        {name: getattr(FLAGS, name) for name in SCENARIO_FLAGS})
    config, runs, reference = plan(
        FLAGS.agents, FLAGS.scenarios, FLAGS.exit_rules, FLAGS.planners,
        FLAGS.num_seeds, FLAGS.parallel, FLAGS.reference,
        {name: getattr(FLAGS, name) for name in TRAIN_SETTINGS}, overrides)
    results.claim_directory(output_dir, config, "comparison.json")
    descriptor = lock(output_dir)
  except results.ConfigMismatchError as error:
    raise app.UsageError(f"--output_dir {output_dir} holds a comparison with a "
                         f"different configuration: {error}") from None
  except (ValueError, ImportError, FileNotFoundError) as error:
    raise app.UsageError(str(error)) from None
  jobs = [sweep.Job(run.name, train_command(run, config, output_dir),
                    run.directory(output_dir), run.log(output_dir))
          for run in runs]
  outcomes = sweep.Sweep(jobs, FLAGS.parallel, logging.info).run()
  written = write_results(runs, config, reference, output_dir,
                          pathlib.Path(FLAGS.results_dir or output_dir))
  os.close(descriptor)
  logging.info("wrote %s", ", ".join(map(str, written)))
  failed = [o for o in outcomes if o.status == "failed"]
  if failed:
    logging.error("%d run(s) failed (rerun the same command to retry them): %s",
                  len(failed), "; ".join(f"{o.job.name} (log {o.job.log})"
                                         for o in failed))
    sys.exit(1)


def run() -> None:
  """Console-script entry point (`lerl-compare`)."""
  app.run(main)


if __name__ == "__main__":
  run()
