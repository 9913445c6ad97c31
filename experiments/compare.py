"""Checking and expanding a comparison's input; writing its results.

Kept apart from the `lerl-compare` binary (which only maps flags onto these
functions) so that every check can be called, and tested, without absl
flags: `lerl-train` defines flags of the same names.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import sys
from typing import Any, Sequence

import lerl_recsim
from lerl_recsim import results
from lerl_recsim.experiments import (comparison, comparison_plots, gin_config,
                                     run_config)
from lerl_recsim.planner import backends
from lerl_recsim.scenarios import exit_rules, registry

TRAIN_SETTINGS = ("num_iterations", "num_eval_sessions", "num_users",
                  "eval_interval", "checkpoint_interval", "log_interval",
                  "replan_every", "planner_mode", "intra_op_threads")
SCENARIO_FLAGS = (*gin_config.SCENARIO_FLAGS, "data_dir")


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


def agent_methods(agents: Sequence[str], planners: Sequence[str]
                  ) -> list[comparison.Method]:
  """The compared methods: an agent that plans with the planner flag runs
  once per backend in --planners, unless written AGENT+PLANNER."""
  check_unique("agents", agents)
  methods = []
  for text in agents:
    agent, pinned, backend = text.partition("+")
    if agent not in run_config.AGENTS:
      raise ValueError(f"--agents: unknown agent {agent!r} in {text!r}; "
                       f"accepted: {sorted(run_config.AGENTS)}")
    takes_planner = run_config.AGENTS[agent].planner == "flag"
    if pinned and not takes_planner:
      raise ValueError(f"--agents: {text!r} pins a planner, but {agent!r} "
                       "takes none; planning agents: " + ", ".join(
                           a for a, s in run_config.AGENTS.items()
                           if s.planner == "flag"))
    if not takes_planner:
      methods.append(comparison.Method(agent))
      continue
    chosen = [backend] if pinned else list(planners)
    check_unique("planners", chosen)
    for choice in chosen:
      check_planner(choice)
      methods.append(comparison.Method(agent, choice))
  labels = [m.label for m in methods]
  check_unique("agents (with their planners)", labels)
  return methods


def parse_exit_rules(names: Sequence[str]) -> list[comparison.ExitRuleChoice]:
  """`--exit_rules` entries (`name` or `name:preset`), each checked against
  the known rules and presets."""
  check_unique("exit_rules", names)
  rules = [comparison.ExitRuleChoice.parse(text) for text in names]
  for rule in rules:
    if rule.name not in exit_rules.EXIT_RULES:
      raise ValueError(f"--exit_rules: unknown exit rule {rule.name!r} in "
                       f"{rule.label!r}; accepted: {sorted(exit_rules.EXIT_RULES)}")
    try:
      exit_rules.resolve_exit_rule(rule.name, rule.params, None)
    except ValueError as error:
      raise ValueError(f"--exit_rules: {rule.label!r}: {error}") from None
  return rules


def plan(agents: Sequence[str], scenarios: Sequence[str],
         exit_rule_names: Sequence[str], planners: Sequence[str],
         num_seeds: int, parallel: int, reference: str,
         train: dict[str, int], scenario_flags: dict[str, Any],
         planner_cache: str = "", gin_bindings: dict[str, Any] | None = None,
         first_seed: int = 0
         ) -> tuple[dict[str, Any], list[comparison.ComparisonRun],
                    comparison.Method]:
  """Checks every input and expands the grid of runs.

  `scenario_flags` are the SCENARIO_FLAGS given (None: unset), the rest of
  the scenario as gin binds it (`gin_bindings`, what `gin_config.parse`
  returned, is recorded); `planner_cache` is the LLM planners' shared
  SQLite cache, relative to the output directory ("" for none). Seeds run
  from `first_seed` (development seeds, 100 and up, choose budgets and
  settings; seeds 0 onwards are reported). Returns
  the comparison's configuration (what comparison.json holds), its runs in
  execution order and the reference method. Raises ValueError (or
  ImportError for a missing planner model) naming the bad value.
  """
  methods = agent_methods(agents, planners)
  check_known("scenarios", scenarios, list(registry.SCENARIOS))
  rules = parse_exit_rules(exit_rule_names)
  for name, value, least in (("num_seeds", num_seeds, 1),
                             ("parallel", parallel, 1),
                             ("first_seed", first_seed, 0)):
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      raise ValueError(f"--{name} must be an int >= {least}, got {value!r}")
  runs = comparison.grid(scenarios, rules, methods, num_seeds, first_seed)
  budgets: dict[str, dict[str, int]] = {}
  for scenario in scenarios:
    for rule in rules:
      overrides = gin_config.scenario_overrides(scenario, rule.label,
                                                scenario_flags)
      gin_config.check_scenario(scenario, overrides)
      registry.build_scenario(scenario, num_users=1, seed=0, **overrides)
      for method in methods:
        resolved = run_config.RunConfig(
            agent=method.agent, scenario=scenario, scenario_overrides=overrides,
            planner=method.planner or run_config.DEFAULT_PLANNER, **train)
        budgets.setdefault(rule.label, {})[method.label] = (
            resolved.num_iterations)
  directories = [run.relative_path for run in runs]
  if len(set(directories)) != len(directories):
    raise ValueError("two methods map to one run directory; planner backends "
                     f"{list(planners)} differ only in characters that paths "
                     "cannot hold")
  config = {"agents": list(agents),
            "planners": list(planners) if any(
                "+" not in a and run_config.AGENTS[a].planner == "flag"
                for a in agents) else [],
            "scenarios": list(scenarios),
            "exit_rules": [rule.label for rule in rules],
            "num_seeds": num_seeds, "train": dict(train),
            "scenario_overrides": {name: value for name, value in
                                   scenario_flags.items() if value is not None},
            "planner_cache": planner_cache,
            "lerl_recsim_version": lerl_recsim.__version__}
  if gin_bindings:  # absent otherwise, as in comparisons from before gin
    config["gin_bindings"] = dict(gin_bindings)
  if first_seed:  # absent for seeds from 0, as in comparisons before it
    config["first_seed"] = first_seed
  if train.get("num_iterations") is None:
    # The code's convergence budgets, which change as they are chosen
    # again: a comparison directory of other budgets is refused, rather
    # than its finished runs reused beside new ones.
    config["budgets"] = budgets
  return config, runs, comparison.resolve_reference(reference, methods)


def gin_flags(files: Sequence[str], bindings: Sequence[str]
              ) -> tuple[str, ...]:
  """--gin_file (absolute) and --gin_bindings flags for every run."""
  return (*(f"--gin_file={os.path.abspath(path)}" for path in files),
          *(f"--gin_bindings={binding}" for binding in bindings))


def train_command(run: comparison.ComparisonRun, config: dict[str, Any],
                  output_dir: pathlib.Path, gin: Sequence[str] = ()
                  ) -> tuple[str, ...]:
  """The `lerl-train` invocation of one run; `gin` are its `gin_flags`."""
  command = [sys.executable, "-m", "lerl_recsim.binaries.train",
             f"--agent={run.method.agent}", f"--scenario={run.scenario}",
             f"--exit_rule={run.exit_rule.label}", f"--seed={run.seed}",
             f"--root_dir={run.directory(output_dir)}"]
  command += [f"--{name}={value}" for name, value in config["train"].items()
              if value is not None]
  command += [f"--{name}={value}" for name, value in
              config["scenario_overrides"].items()]
  command += gin
  if run.method.planner is not None:
    command.append(f"--planner={run.method.planner}")
    if config.get("planner_cache") and run.method.planner != "heuristic":
      command.append(
          f"--planner_cache={output_dir / config['planner_cache']}")
  return tuple(command)


# Lists a comparison may grow by without invalidating its finished runs:
# each run's directory depends only on its own (scenario, rule, method,
# seed), and lerl-train refuses a run directory of another configuration.
GROWABLE = ("agents", "planners", "scenarios", "exit_rules")


def extends(old: Any, new: Any) -> bool:
  """Whether `new` holds every budget of `old` (rule -> method ->
  iterations) unchanged."""
  return (isinstance(old, dict) and isinstance(new, dict) and all(
      isinstance(methods, dict) and isinstance(new.get(rule), dict)
      and methods.items() <= new[rule].items()
      for rule, methods in old.items()))


def additions(saved: dict[str, Any], config: dict[str, Any]
              ) -> list[str] | None:
  """What `config` adds to a saved comparison configuration (methods,
  conditions, seeds), or None when it changes anything else."""
  added = []
  for key in sorted(set(saved) | set(config)):
    old, new = saved.get(key), config.get(key)
    if old == new:
      continue
    if (key in GROWABLE and isinstance(old, list) and isinstance(new, list)
        and set(old) <= set(new)):
      added += [f"{key[:-1]} {item}" for item in new if item not in old]
    elif key == "budgets" and extends(old, new):
      continue  # its new entries are the added methods' and rules'
    elif key == "num_seeds" and isinstance(old, int) and isinstance(
        new, int) and new > old:
      first = config.get("first_seed", 0)
      added.append(f"seeds {first + old}-{first + new - 1}")
    else:
      return None
  return added


def claim(output_dir: pathlib.Path, config: dict[str, Any],
          report: Any = print) -> int:
  """Claims OUTPUT_DIR for `config` and locks it against a second sweep;
  returns the lock's descriptor, held while this process lives.

  A directory holding a comparison whose configuration `config` only adds
  to (more methods, planners, scenarios, exit rules or seeds) is taken over
  and grows; its finished runs are reused. Any other difference is refused.
  """
  output_dir.mkdir(parents=True, exist_ok=True)
  descriptor = os.open(output_dir / "comparison.lock", os.O_RDWR | os.O_CREAT)
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(descriptor)
    raise ValueError(f"another lerl-compare is running in {output_dir}; wait "
                     "for it or stop it first") from None
  path = output_dir / "comparison.json"
  try:
    saved = json.loads(path.read_text()) if path.exists() else None
  except json.JSONDecodeError:
    saved = None  # claim_directory names the damaged file
  normalised = results.normalised_config(config)
  grown = (additions(saved, normalised)
           if isinstance(saved, dict) and saved != normalised else None)
  try:
    if grown is not None:
      results.write_json_atomic(path, normalised)
      report(f"the comparison in {output_dir} grows: "
             f"{', '.join(grown) or 'a new order'}; its finished runs are "
             "reused")
    results.claim_directory(output_dir, config, "comparison.json")
  except results.ConfigMismatchError as error:
    os.close(descriptor)
    raise ValueError(f"--output_dir: {error}") from None
  return descriptor


def budget_text(num_iterations: int | None) -> str:
  """The comparison's training budget in words."""
  if num_iterations is not None:
    return f"{num_iterations} training iterations"
  return ("training iterations by agent family (convergence budgets: "
          f"{run_config.budgets_text()})")


def write_results(runs: Sequence[comparison.ComparisonRun],
                  config: dict[str, Any], reference: comparison.Method,
                  output_dir: pathlib.Path, results_dir: pathlib.Path,
                  command: str) -> list[pathlib.Path]:
  """results.md (the table, what each planner adds over the control
  planner where an agent ran with several, then the seed-mean learning
  curves), results.csv and the plots, from the runs that finished;
  `command` (what produced them) heads results.md."""
  rows = comparison.build_table(runs, output_dir, reference)
  train = config["train"]
  first_seed = config.get("first_seed", 0)
  last_seed = first_seed + config["num_seeds"] - 1
  header = [
      f"Produced by lerl-recsim {lerl_recsim.__version__} with:",
      "", "```", command, "```", "",
      f"{config['num_seeds']} seeds per method ({first_seed}-{last_seed}); "
      f"{budget_text(train['num_iterations'])} of {train['num_users']} "
      f"users; {train['num_eval_sessions']} evaluation sessions per run.",
  ]
  plots = comparison_plots.write_all(runs, rows, output_dir, results_dir)
  markdown = results_dir / "results.md"
  curves = comparison.format_curves(
      comparison.build_curves(runs, output_dir, reference), reference)
  contrasts = comparison.format_all_contrasts(rows, reference)
  markdown.write_text(
      comparison.format_markdown(rows, reference, header) + "\n" +
      (contrasts + "\n" if contrasts else "") + curves +
      "\n## Plots\n\n" +
      "".join(f"![{path.stem}]({path.name})\n\n" for path in plots))
  table = results_dir / "results.csv"
  table.write_text(comparison.format_csv(rows, reference))
  return [markdown, table, *plots]
