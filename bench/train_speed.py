r"""End-to-end training throughput against the simulator's own, in one run.

  python bench/train_speed.py
  python bench/train_speed.py --planner_cache=/tmp/planner.sqlite  # warm cache

Measured back to back on the same machine, 64 users:
1. the environment alone: `PyEnvironment.step` with uniformly random actions
   (what `bench/env_speed.py` measures), the reference for the target
   "dqn trains at >= 0.5x the environment's own throughput";
2. `dqn`: lerl-train's DQN defaults (`dqn.default_hyperparameters()`: collect
   steps of all users, then gradient steps, per iteration) on the
   TensorFlow-native environment, as lerl-train trains;
3. `lerl` with the heuristic planner, replanning every step (K = 1) and at
   the module default K (target: at most 1.3x dqn's time at K = 1);
4. `lerl` with the embedded LLM planner in the background (lerl-train's
   default mode; target: at most 1.5x dqn's time), with the LLM's share of
   plans and its calls per 1,000 user-steps.
Each learner is warmed up (its graphs traced) before timing. The time ratios
are to `dqn` measured in this run.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from absl import app, flags

import lerl_recsim
from lerl_recsim import planner_environment, tf_environment
from lerl_recsim.agents import dqn

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_users", 64, "Simultaneous users.")
flags.DEFINE_integer("iterations", 1000, "Timed training iterations per agent.")
flags.DEFINE_integer("env_steps", 3000, "Timed steps of the environment alone.")
flags.DEFINE_boolean("embedded", True, "Measure the embedded LLM planner.")
flags.DEFINE_string("planner_cache", None, "SQLite LLM cache for the embedded planner.")

HYPERPARAMETERS = dqn.default_hyperparameters()


def environment_rate(num_users: int, steps: int) -> float:
  """User-steps/s of `PyEnvironment.step` with random actions."""
  env = lerl_recsim.make_env(num_users=num_users, seed=0)
  env.reset()
  rng = np.random.default_rng(0)
  num_items = env.scenario.items.num_items
  actions = [rng.integers(0, num_items, num_users, dtype=np.int32)
             for _ in range(steps)]
  for action in actions[:100]:
    env.step(action)
  start = time.perf_counter()
  for action in actions:
    env.step(action)
  return steps * num_users / (time.perf_counter() - start)


def training_rate(env: Any, iterations: int) -> dict[str, float]:
  learner = dqn.build_learner(env, **HYPERPARAMETERS)
  for _ in range(20):
    learner.run_iteration()
  first = learner.user_steps
  start = time.perf_counter()
  for _ in range(iterations):
    learner.run_iteration()
  seconds = time.perf_counter() - start
  return {"rate": (learner.user_steps - first) / seconds, "seconds": seconds}


def planned(backend: str, replan_every: int, cache: str | None = None,
            ) -> tf_environment.PlannedTFEnvironment:
  options = {"cache_path": cache} if cache else None
  return tf_environment.make_planned_tf_env(
      planner=backend, replan_every=replan_every, num_users=FLAGS.num_users,
      seed=0, wait_for_planner=False, planner_options=options)


def main(argv) -> None:
  del argv
  users, iterations = FLAGS.num_users, FLAGS.iterations
  simulator = environment_rate(users, FLAGS.env_steps)
  print(f"environment alone, random actions, {users} users: "
        f"{simulator:8.0f} user-steps/s")
  base = training_rate(tf_environment.make_tf_env(num_users=users, seed=0),
                       iterations)
  ratio = base["rate"] / simulator
  print(f"dqn (no planner):             {base['rate']:8.0f} user-steps/s; "
        f"{ratio:.2f}x the environment alone (target >= 0.5: "
        f"{'met' if ratio >= 0.5 else 'NOT met'})")

  def overhead(name: str, env: Any, target: float | None) -> dict[str, float]:
    measured = training_rate(env, iterations)
    cost = base["rate"] / measured["rate"]
    verdict = (f" (target <= {target}: {'met' if cost <= target else 'NOT met'})"
               if target else "")
    print(f"{name:30s}{measured['rate']:8.0f} user-steps/s; "
          f"{cost:.2f}x dqn's time{verdict}")
    return measured

  overhead("lerl, heuristic, K=1:", planned("heuristic", 1), 1.3)
  default_k = planner_environment.DEFAULT_REPLAN_EVERY
  if default_k != 1:
    overhead(f"lerl, heuristic, K={default_k}:", planned("heuristic", default_k),
             None)
  if not FLAGS.embedded:
    return
  env = planned("embedded", default_k, FLAGS.planner_cache)
  measured = overhead(f"lerl, embedded, K={default_k}, bg:", env, 1.5)
  metrics = env.planner_metrics()
  env.planner.close()
  print(f"  planner {metrics['planner_seconds']:.1f} s of "
        f"{measured['seconds']:.1f} s; plans by the LLM "
        f"{metrics['llm_plan_share']:.1%}; LLM calls {metrics['llm_calls']:.0f} "
        f"({metrics['llm_calls_per_1k_user_steps']:.2f} per 1,000 user-steps); "
        f"situations in the table {metrics['situations_in_table']:.0f}")


if __name__ == "__main__":
  app.run(main)
