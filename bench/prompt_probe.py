r"""What the embedded model answers for the scenario prompt, old and new.

Collects users' histories from a short heuristic-planned run (diversifying
policy), keeps `--situations` distinct ones, and asks the LLM planner for
each (waiting, cold cache) under two prompt settings: before the shortlist
(the last step, totals, the whole catalogue) and the default (4 steps, a
shortlist of 12). Prints per setting: fallbacks by cause, seconds per LLM
call, distinct plans, overlap with the heuristic's plan (Jaccard), and the
share of picked names among the first 8 listed (catalogue or shortlist),
a measure of position bias (8 / the number listed if unbiased).

  python bench/prompt_probe.py --seed=100 --situations=24
"""

from __future__ import annotations

import dataclasses
import time

from absl import app, flags

import lerl_recsim
from lerl_recsim import evaluation, planner_environment
from lerl_recsim.agents import networks, scripted_policies
from lerl_recsim.planner import make_planner

FLAGS = flags.FLAGS
flags.DEFINE_string("backend", "embedded", "LLM backend.")
flags.DEFINE_integer("situations", 24, "Distinct situations asked.")
flags.DEFINE_integer("num_users", 16, "Users of the run that collects them.")
flags.DEFINE_integer("seed", 0, "Seed of users, heuristic and model.")
flags.DEFINE_string("exit_rule", "satisfaction", "Exit rule of the run.")
flags.DEFINE_integer("n_threads", 2, "CPU threads of a local model (1 on a "
                     "loaded machine: two threads that wait on each other "
                     "crawl when the cores are oversubscribed).")

_SCENARIO = planner_environment.SCENARIO_PROMPT_CONFIG
SETTINGS = {
    "1 step, totals, whole catalogue (before)": dataclasses.replace(
        _SCENARIO, history_window=1, show_totals=True, shortlist_size=None),
    "default: 4 steps, shortlist": _SCENARIO,
}


class Collector:
  """Plans with the heuristic and keeps every planned user's history."""

  def __init__(self, heuristic):
    self.heuristic, self.histories = heuristic, []

  def plan(self, histories, wait=True):
    self.histories.extend(histories)
    return self.heuristic.plan(histories)

  def end_sessions(self, histories, wait=True):
    del histories, wait

  def metrics(self):
    return {}


def jaccard(a, b) -> float:
  return len(set(a) & set(b)) / len(set(a) | set(b))


def main(argv: list[str]) -> None:
  del argv
  base = lerl_recsim.make_env(num_users=FLAGS.num_users, seed=FLAGS.seed,
                              exit_rule=FLAGS.exit_rule)
  catalogue = base.scenario.catalogue
  collector = Collector(make_planner("heuristic", catalogue, seed=FLAGS.seed))
  env = planner_environment.make_planned_env(base, collector, 1,
                                            seed=FLAGS.seed)
  evaluation.evaluate_sessions(env, scripted_policies.DiversifyingPolicy(
      networks.base_environment(env), seed=FLAGS.seed))
  by_length = sorted(collector.histories, key=lambda h: h.session_length)
  stride = max(len(by_length) // FLAGS.situations, 1)
  histories = by_length[::stride][:FLAGS.situations]
  heuristic = collector.heuristic.plan(histories)
  print(f"{len(histories)} histories (session lengths "
        f"{histories[0].session_length}-{histories[-1].session_length}), "
        f"seed {FLAGS.seed}, {FLAGS.exit_rule}, backend {FLAGS.backend}")
  for name, config in SETTINGS.items():
    local = FLAGS.backend == "embedded" or FLAGS.backend.startswith("gguf:")
    planner = make_planner(FLAGS.backend, catalogue, seed=FLAGS.seed,
                           model_options={"n_threads": FLAGS.n_threads}
                           if local else None,
                           prompt_config=config, reflections=None)
    inputs = planner.prompt_inputs(histories)
    start = time.perf_counter()
    plans = planner.plan(histories)
    seconds = time.perf_counter() - start
    m = planner.metrics()
    listed = [x["choices"] or tuple(range(catalogue.num_categories))
              for x in inputs]
    llm = [(p, h, c) for p, h, c, a in zip(plans, heuristic, listed,
                                           planner.llm_plans(histories))
           if a is not None]
    first8 = sum(len(set(p) & set(c[:8])) for p, _, c in llm)
    picks = sum(len(p) for p, _, _ in llm)
    print(f"{name}: {m['plan_llm_calls']:.0f} LLM calls, "
          f"{seconds / max(m['plan_llm_calls'], 1):.2f} s each; fallbacks "
          f"{m['fallbacks']:.0f} (invalid {m['fallback_invalid_plan']:.0f}, "
          f"parse {m['fallback_parse_error']:.0f}); LLM plans {len(llm)}, "
          f"distinct {len({tuple(sorted(p)) for p, _, _ in llm})}; "
          f"Jaccard with the heuristic's plan "
          f"{sum(jaccard(p, h) for p, h, _ in llm) / max(len(llm), 1):.2f}; "
          f"picks among the first 8 listed "
          f"{first8 / max(picks, 1):.0%} (unbiased "
          f"{sum(8 / len(c) * len(p) for p, _, c in llm) / max(picks, 1):.0%})",
          flush=True)
    planner.close()


if __name__ == "__main__":
  app.run(main)
