r"""Plan quality: how much each planner's mask handicaps a good low level.

For each exit rule, the scripted diversifying and oracle policies run on the
same fresh users (one whole session each): flat, on the `make_env`
environment under its wrapper, and inside the planned environment of each
planner (`make_planned_env`, waiting for every plan, as evaluation does). A
planner that only narrows choices should cost a good policy little: the
target is a loss of at most 5% of cumulative reward, and an LLM planner's
loss within 5 percentage points of the heuristic's. Each planned run has a
fresh planner, so no result depends on the runs before it. Prints, per rule
and policy, the flat mean and each planner's planned mean and change side
by side, then each planner's LLM calls per 1,000 user-steps (plan requests
that reached the model; a likelihood answer makes several per situation)
and share of LLM-made plans.

  python bench/plan_handicap.py  # heuristic and embedded side by side
  python bench/plan_handicap.py --planners=heuristic,embedded \
      --answers=list,likelihood:20,likelihood:12 --n_threads=1
  python bench/plan_handicap.py --planners=heuristic,openai:qwen2.5-7b
  python bench/plan_handicap.py --planner_cache=/tmp/planner.sqlite  # warm

The oracle reads the hidden user state of the scenario environment under
the wrapper, and still picks only items of the wrapper's mask.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import app, flags

from lerl_recsim import evaluation, metrics, planner_environment
from lerl_recsim.planner import PlanRules, ReflectionPool
from lerl_recsim.agents import networks, scripted_policies
from lerl_recsim.experiments import compare, run_config

FLAGS = flags.FLAGS
flags.DEFINE_list("exit_rules",
                  ["satisfaction", "temper", "category_window:dorl"],
                  "Exit rules, each optionally with a preset (as lerl-compare).")
flags.DEFINE_list("planners", ["heuristic", run_config.DEFAULT_PLANNER],
                  "Planner backends side by side: heuristic, embedded, "
                  "gguf:PATH, openai:MODEL, ollama:MODEL.")
flags.DEFINE_integer("replan_every", planner_environment.DEFAULT_REPLAN_EVERY,
                     "Steps between a user's plans.")
flags.DEFINE_integer("num_sessions", 512, "Fresh users, one session each.")
flags.DEFINE_integer("seed", 0, "Seed of users, planner and policies.")
flags.DEFINE_string("planner_cache", None, "SQLite LLM cache of LLM planners.")
flags.DEFINE_integer("min_categories", PlanRules.min_categories,
                     "Fewest categories in a plan.")
flags.DEFINE_integer("max_categories", PlanRules.max_categories,
                     "Most categories in a plan (the heuristic's plan size).")
_PROMPT = planner_environment.SCENARIO_PROMPT_CONFIG
flags.DEFINE_integer("history_window", _PROMPT.history_window,
                     "LLM planners: steps shown in the prompt.")
flags.DEFINE_integer("shortlist_size", _PROMPT.shortlist_size,
                     "LLM planners: candidates offered (M); 0 offers the "
                     "whole catalogue without a list.")
flags.DEFINE_bool("show_totals", _PROMPT.show_totals,
                  "LLM planners: show session length and reward.")
flags.DEFINE_bool("reflections", None,
                  "LLM planners: write lessons from finished sessions into "
                  "the prompts (--noreflections: no reflection pool; unset: "
                  "the backend's default, none for local models).")
flags.DEFINE_integer("n_threads", None,
                     "Local LLM planners: CPU threads (1 on a loaded machine).")
flags.DEFINE_list("answers", [_PROMPT.answer],
                  "LLM planners, each run with each answer: list (the model "
                  "writes its plan) or likelihood:M (it scores every "
                  "category; each user's plan is the best of the "
                  "heuristic's first M picks; M = 20: the model alone).")

POLICIES = ("diversifying", "oracle")
MAX_LOSS_PERCENT = 5.0


@dataclasses.dataclass(frozen=True)
class Variant:
  """A planner backend and, for LLMs, how the model answers."""

  backend: str
  answer: str = "list"
  score_shortlist: int | None = None

  @property
  def label(self) -> str:
    if self.backend == "heuristic":
      return "heuristic"
    if self.answer == "list":
      return f"{self.backend} (list)"
    return f"{self.backend} (likelihood, of {self.score_shortlist})"


def parse_variants(planners: list[str], answers: list[str]) -> list[Variant]:
  """One variant per planner, and per answer for LLM planners."""
  variants = []
  for backend in planners:
    if backend == "heuristic":
      variants.append(Variant(backend))
      continue
    for answer in answers:
      kind, _, size = answer.partition(":")
      if kind == "list" and not size:
        variants.append(Variant(backend))
      elif kind == "likelihood" and size.isdigit():
        variants.append(Variant(backend, "likelihood", int(size)))
      else:
        raise ValueError(f"--answers entry {answer!r}; expected list or "
                         "likelihood:M with M a number of categories")
  return variants


def cumulative_reward(env: Any, policy_name: str) -> dict[str, float]:
  """Mean and ci95 of one session per slot of `env` under the policy."""
  policy = scripted_policies.SCRIPTED_POLICIES[policy_name](
      networks.base_environment(env), seed=FLAGS.seed)
  summary = metrics.summarise(evaluation.evaluate_sessions(env, policy))
  return summary["cumulative_reward"]


def planned_env(variant: Variant, overrides: dict[str, Any]) -> Any:
  """The planned environment of `variant`, waiting for every plan."""
  rules = PlanRules(min_categories=FLAGS.min_categories,
                    max_categories=FLAGS.max_categories)
  options: dict[str, Any] = {"rules": rules}
  model_options = None
  if variant.backend != "heuristic":
    options["prompt_config"] = dataclasses.replace(
        _PROMPT, history_window=FLAGS.history_window,
        shortlist_size=FLAGS.shortlist_size or None,
        show_totals=FLAGS.show_totals, answer=variant.answer,
        score_shortlist=variant.score_shortlist)
    if FLAGS.planner_cache:
      options["cache_path"] = FLAGS.planner_cache
    if FLAGS.reflections is False:
      options["reflections"] = None
    elif FLAGS.reflections:
      options.update(reflections=ReflectionPool(),
                     **planner_environment.EFFICIENT_REFLECTIONS)
    if FLAGS.n_threads:
      model_options = {"n_threads": FLAGS.n_threads}
  return planner_environment.make_planned_env(
      planner=variant.backend, replan_every=FLAGS.replan_every,
      num_users=FLAGS.num_sessions, seed=FLAGS.seed, wait_for_planner=True,
      planner_options=options, model_options=model_options, **overrides)


def planned(variant: Variant, policy_name: str, overrides: dict[str, Any]
            ) -> tuple[Any, dict[str, float], dict[str, float]]:
  """The planned environment, the policy's reward in it and the planner's
  metrics (the environment is returned for its flat base)."""
  env = planned_env(variant, overrides)
  try:
    return env, cumulative_reward(env, policy_name), env.planner_metrics()
  finally:
    if hasattr(env.planner, "close"):
      env.planner.close()


def relative_change(flat: float, planned_mean: float) -> float:
  """Percent change of the planned mean against the flat one."""
  return 100.0 * (planned_mean - flat) / abs(flat)


def main(argv: list[str]) -> None:
  del argv
  try:
    rules = compare.parse_exit_rules(FLAGS.exit_rules)
    variants = parse_variants(FLAGS.planners, FLAGS.answers)
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  print(f"{FLAGS.num_sessions} users, seed {FLAGS.seed}; replan every "
        f"{FLAGS.replan_every} steps, plans of {FLAGS.min_categories}-"
        f"{FLAGS.max_categories} categories; LLM prompt: "
        f"{FLAGS.history_window} steps, shortlist "
        f"{FLAGS.shortlist_size or 'none'}, totals "
        f"{'shown' if FLAGS.show_totals else 'not shown'}, reflections "
        f"{ {None: 'as the backend', True: 'on', False: 'off'}[FLAGS.reflections] }")
  calls: dict[str, list[float]] = {v.label: [] for v in variants}
  shares: dict[str, list[float]] = {v.label: [] for v in variants}
  print("| exit rule | policy | flat | " + " | ".join(
      v.label for v in variants) + " |")
  print("|---|---|---|" + "---|" * len(variants))
  for rule in rules:
    overrides = {"exit_rule": rule.name, "exit_params": rule.params}
    for name in POLICIES:
      cells, flat = [], None
      for variant in variants:
        env, reward, planner = planned(variant, name, overrides)
        if flat is None:  # the same users, flat
          flat = cumulative_reward(networks.base_environment(env), name)
        change = relative_change(flat["mean"], reward["mean"])
        cells.append(f"{metrics.format_mean_ci(reward, 2)} ({change:+.1f}%"
                     f"{'' if change >= -MAX_LOSS_PERCENT else ', NOT met'})")
        calls[variant.label].append(planner["llm_calls_per_1k_user_steps"])
        if "llm_plan_share" in planner:
          shares[variant.label].append(planner["llm_plan_share"])
      print(f"| {rule.label} | {name} | {metrics.format_mean_ci(flat, 2)} | "
            + " | ".join(cells) + " |", flush=True)
  for variant in variants:
    share = shares[variant.label]
    print(f"{variant.label}: LLM calls per 1,000 user-steps "
          f"{min(calls[variant.label]):.1f}-{max(calls[variant.label]):.1f}"
          + (f", LLM plans {min(share):.1%}-{max(share):.1%}" if share else ""))
  print(f"change: planned against flat; target: a loss of at most "
        f"{MAX_LOSS_PERCENT:.0f}%")


if __name__ == "__main__":
  app.run(main)
