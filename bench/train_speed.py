r"""End-to-end training throughput: dqn against lerl, measured in one run.

For each agent: a masked double DQN with lerl-train's default
hyper-parameters (read from `agents/dqn.py`) trains on
the default scenario with 64 users (collect + gradient steps, as in
lerl-train), after a warm-up; prints user-steps/s, and for lerl the
planner's LLM calls and its overhead against dqn.

  python bench/train_speed.py
  python bench/train_speed.py --planner_cache=/tmp/planner.sqlite  # warm cache

The embedded planner is measured over a fixed wall-time budget: with a cold
cache its first minutes are dominated by LLM calls, so both the whole window
and its last quarter are printed.
"""

from __future__ import annotations

import inspect
import time

from absl import app, flags

import lerl_recsim
from lerl_recsim import planner_environment
from lerl_recsim.agents import dqn, learners

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_users", 64, "Simultaneous users.")
flags.DEFINE_integer("iterations", 300, "Timed iterations (dqn, heuristic).")
flags.DEFINE_float("embedded_seconds", 180.0, "Wall-time budget of the "
                   "embedded-planner measurement (0 skips it).")
flags.DEFINE_string("planner_cache", None, "SQLite LLM cache for the embedded planner.")

# lerl-train's defaults, read from the DQN family's train_eval.
DEFAULTS = {name: parameter.default for name, parameter in
            inspect.signature(dqn.train_eval).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY}
AGENT_OPTIONS = ("fc_layer_params", "learning_rate", "gamma", "epsilon_greedy",
                 "target_update_period")


def learner_for(env) -> learners.OffPolicyLearner:
  agent = dqn.make_agent(env, **{k: DEFAULTS[k] for k in AGENT_OPTIONS})
  return dqn.learner(
      agent, env, epsilon_greedy=DEFAULTS["epsilon_greedy"],
      replay_capacity=DEFAULTS["replay_capacity"],
      batch_size=DEFAULTS["batch_size"],
      collect_steps=DEFAULTS["collect_steps_per_iteration"],
      train_steps=DEFAULTS["train_steps_per_iteration"],
      initial_collect_steps=DEFAULTS["initial_collect_steps"])


def timed(env, iterations: int | None, seconds: float | None) -> dict[str, float]:
  learner = learner_for(env)
  for _ in range(20):
    learner.run_iteration()
  steps_per_iteration = env.batch_size * DEFAULTS["collect_steps_per_iteration"]
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


def planned(backend: str, num_users: int, cache: str | None):
  options = {"cache_path": cache} if cache and backend != "heuristic" else None
  return planner_environment.make_planned_env(
      planner=backend, num_users=num_users, seed=0, planner_options=options)


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
  if FLAGS.embedded_seconds > 0:
    env = planned("embedded", u, FLAGS.planner_cache)
    embedded = timed(env, None, FLAGS.embedded_seconds)
    metrics = env.planner_metrics()
    print(f"lerl, embedded planner:     {embedded['rate']:8.0f} user-steps/s over "
          f"{embedded['seconds']:.0f} s ({embedded['user_steps']} user-steps); "
          f"last quarter {embedded['last_quarter_rate']:.0f} user-steps/s")
    print(f"  overhead vs dqn: {base['rate'] / embedded['rate']:.1f}x time overall, "
          f"{base['rate'] / max(embedded['last_quarter_rate'], 1e-9):.1f}x in the "
          f"last quarter; LLM calls {metrics.get('llm_calls', 0):.0f} "
          f"({1000 * metrics.get('llm_calls', 0) / max(metrics.get('user_steps', 1), 1):.1f}"
          f" per 1,000 user-steps), cache hits {metrics.get('cache_hits', 0):.0f}, "
          f"planner {metrics.get('planner_seconds', 0):.0f} s of wall time")


if __name__ == "__main__":
  app.run(main)
