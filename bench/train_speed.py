r"""End-to-end training throughput: dqn against lerl, measured in one run.

For each agent: a masked double DQN with lerl-train's default
hyper-parameters (`dqn.default_hyperparameters()`) trains on the default
scenario with 64 users (collect + gradient steps, as in lerl-train), after a
warm-up; prints user-steps/s, and for lerl the planner's overhead against
dqn measured here.

  python bench/train_speed.py
  python bench/train_speed.py --planner_cache=/tmp/planner.sqlite  # warm cache

The embedded planner runs as lerl-train trains by default, in the
background (--planner_mode=background: training never waits, and users the
LLM has not answered yet get the heuristic plan): it trains for the same
iterations as dqn, and the share of users the LLM planned is printed. Then,
waiting for every plan (--planner_mode=wait), for a fixed wall-time budget:
with a cold cache its first minutes are dominated by LLM calls, so both the
whole window and its last quarter are printed.
"""

from __future__ import annotations

import time

from absl import app, flags

import lerl_recsim
from lerl_recsim import planner_environment
from lerl_recsim.agents import dqn

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_users", 64, "Simultaneous users.")
flags.DEFINE_integer("iterations", 300, "Timed iterations (dqn, heuristic, "
                     "embedded in the background).")
flags.DEFINE_float("embedded_seconds", 180.0, "Wall-time budget of the "
                   "embedded planner waiting for every plan (0 skips it).")
flags.DEFINE_boolean("embedded", True, "Measure the embedded planner.")
flags.DEFINE_string("planner_cache", None, "SQLite LLM cache for the embedded planner.")

HYPERPARAMETERS = dqn.default_hyperparameters()


def timed(env, iterations: int | None, seconds: float | None) -> dict[str, float]:
  learner = dqn.build_learner(env, **HYPERPARAMETERS)
  for _ in range(20):
    learner.run_iteration()
  steps_per_iteration = (env.batch_size *
                         HYPERPARAMETERS["collect_steps_per_iteration"])
  marks = [(time.perf_counter(), 0)]
  done = 0
  while (iterations is not None and done < iterations) or (
      seconds is not None and time.perf_counter() - marks[0][0] < seconds):
    learner.run_iteration()
    done += 1
    marks.append((time.perf_counter(), done))
  elapsed = marks[-1][0] - marks[0][0]
  quarter_start = marks[int(len(marks) * 0.75)]
  quarter = marks[-1][0] - quarter_start[0]
  return {"rate": done * steps_per_iteration / elapsed,
          "last_quarter_rate": (done - quarter_start[1]) * steps_per_iteration /
                               max(quarter, 1e-9),
          "user_steps": done * steps_per_iteration, "seconds": elapsed}


def planned(backend: str, num_users: int, cache: str | None, wait: bool = True):
  options = {"cache_path": cache} if cache and backend != "heuristic" else None
  return planner_environment.make_planned_env(
      planner=backend, num_users=num_users, seed=0, planner_options=options,
      wait_for_planner=wait)


def main(argv) -> None:
  del argv
  u = FLAGS.num_users
  base = timed(lerl_recsim.make_env(num_users=u, seed=0), FLAGS.iterations, None)
  print(f"dqn (no planner), {u} users: {base['rate']:8.0f} user-steps/s "
        f"({base['user_steps']} user-steps in {base['seconds']:.1f} s); "
        f"target >= 5000: {'met' if base['rate'] >= 5000 else 'NOT met'}")
  env = planned("heuristic", u, None)
  heuristic = timed(env, FLAGS.iterations, None)
  print(f"lerl, heuristic planner:    {heuristic['rate']:8.0f} user-steps/s; "
        f"overhead vs dqn {base['rate'] / heuristic['rate']:.2f}x time")
  if not FLAGS.embedded:
    return
  env = planned("embedded", u, FLAGS.planner_cache, wait=False)
  background = timed(env, FLAGS.iterations, None)
  metrics = env.planner_metrics()
  env.planner.close()
  print(f"lerl, embedded, background: {background['rate']:8.0f} user-steps/s; "
        f"overhead vs dqn {base['rate'] / background['rate']:.2f}x time, vs "
        f"heuristic {heuristic['rate'] / background['rate']:.2f}x")
  print(f"  planner {metrics['planner_seconds']:.1f} s of "
        f"{background['seconds']:.1f} s wall time "
        f"({metrics['planner_seconds'] / background['seconds']:.1%}); users "
        f"planned by the LLM {metrics['llm_plan_share']:.1%}; LLM calls "
        f"{metrics['llm_calls']:.0f} "
        f"({metrics['llm_calls_per_1k_user_steps']:.1f} per 1,000 "
        f"user-steps); worker busy {metrics['background_busy_s']:.0f} s")
  if FLAGS.embedded_seconds > 0:
    env = planned("embedded", u, FLAGS.planner_cache)
    embedded = timed(env, None, FLAGS.embedded_seconds)
    metrics = env.planner_metrics()
    print(f"lerl, embedded, waiting:    {embedded['rate']:8.0f} user-steps/s over "
          f"{embedded['seconds']:.0f} s ({embedded['user_steps']} user-steps); "
          f"last quarter {embedded['last_quarter_rate']:.0f} user-steps/s")
    print(f"  overhead vs dqn: {base['rate'] / embedded['rate']:.1f}x time overall, "
          f"{base['rate'] / max(embedded['last_quarter_rate'], 1e-9):.1f}x in the "
          f"last quarter; LLM calls {metrics['llm_calls']:.0f} "
          f"({metrics['llm_calls_per_1k_user_steps']:.1f} per 1,000 user-steps), "
          f"cache hits {metrics['cache_hits']:.0f}, planner "
          f"{metrics['planner_seconds']:.0f} s of wall time")


if __name__ == "__main__":
  app.run(main)
