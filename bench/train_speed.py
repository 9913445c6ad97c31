r"""End-to-end training throughput against the simulator's own, in one run.

  python bench/train_speed.py
  python bench/train_speed.py --planner_cache=/tmp/planner.sqlite  # warm cache
  python bench/train_speed.py --collect_steps_per_iteration=8 --noembedded
      # a cheaper learner: more collection per gradient step

Measured back to back on the same machine, 64 users:
1. the environment alone: `PyEnvironment.step` with uniformly random actions
   (what `bench/env_speed.py` measures), the reference for the target
   "dqn trains at >= 0.5x the environment's own throughput";
2. `dqn`: lerl-train's DQN defaults (`dqn.Hyperparameters()`: collect
   steps of all users, then gradient steps, per iteration; the collect
   steps from --collect_steps_per_iteration) on the TensorFlow-native
   environment, as lerl-train trains; every learner below uses the same;
3. `lerl` with the heuristic planner, replanning every step (K = 1) and at
   the module default K (target: at most 1.3x dqn's time at K = 1);
4. `lerl` with the embedded LLM planner in the background (lerl-train's
   default mode; target: at most 1.5x dqn's time), from a cold cache over
   lerl-train's whole default budget, with the cost so far at a few earlier
   marks (new situations, the model's work, come most often early in a
   run), the LLM's share of plans and its calls per 1,000 user-steps.
All of it runs with lerl-train's threads per op (--intra_op_threads, one by
default), the environment alone included; `--intra_op_threads=0` gives
TensorFlow's own choice (one per core). Each learner is warmed up (its
graphs traced) before timing; the environment alone and the learners
without an LLM take turns in several rounds (median rate printed), so that
they meet the same machine load; the embedded planner runs alone after
them, since its worker thread takes a core of its own, and `dqn` takes
turns again after it: its ratio is to the mean of `dqn`'s rates before and
after, since a shared machine's speed drifts over those minutes. The time
ratios are to `dqn` measured in this run.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import numpy as np
from absl import app, flags

import lerl_recsim
from lerl_recsim import planner_environment, tf_environment
from lerl_recsim.agents import dqn
from lerl_recsim.experiments import run_config, runner

FLAGS = flags.FLAGS
ALONE = "environment alone"
DQN = "dqn (no planner):"
flags.DEFINE_integer("num_users", 64, "Simultaneous users.")
flags.DEFINE_integer("iterations", 1000, "Timed training iterations per agent.")
flags.DEFINE_integer("rounds", 5, "Turns the environment alone and the agents "
                     "without an LLM take, interleaved; the median rate is "
                     "printed.")
flags.DEFINE_integer("env_steps", 3000, "Timed steps of the environment "
                     "alone, over all rounds.")
flags.DEFINE_boolean("embedded", True, "Measure the embedded LLM planner.")
flags.DEFINE_integer(
    "embedded_iterations",
    run_config.convergence_budget(run_config.AGENTS["lerl"].family, None),
    "Timed iterations of the embedded planner (default: lerl-train's budget "
    "for lerl): a training run's whole cost.", lower_bound=1)
flags.DEFINE_integer(
    "embedded_chunk", 1000, "Embedded planner iterations between two turns "
    "of dqn (its ratio is to the mean rate of the turns either side).",
    lower_bound=1)
flags.DEFINE_integer("dqn_turn_iterations", 100, "Iterations of each dqn "
                     "turn between the embedded planner's chunks.",
                     lower_bound=1)
flags.DEFINE_list("embedded_marks", ["2000", "6000"], "Iterations at which "
                  "the embedded planner's cost so far is printed too.")
flags.register_validator(
    "embedded_marks", lambda marks: all(m.isdigit() for m in marks),
    "--embedded_marks: expected iteration counts, e.g. 2000,6000")
flags.DEFINE_string("planner_cache", None, "SQLite LLM cache for the embedded planner.")
flags.DEFINE_float(
    "local_busy_share", None, "The embedded planner's `local_busy_share` "
    "(default: the Planner's): the share of wall time its model may compute "
    "once its plans are most of the plans.", lower_bound=0.01, upper_bound=1.0)
flags.DEFINE_integer(
    "collect_steps_per_iteration",
    dqn.Hyperparameters().collect_steps_per_iteration,
    "Environment steps of all users per gradient step (default: lerl-train's);"
    " more is a cheaper learner per user-step.", lower_bound=1)
flags.DEFINE_integer(
    "intra_op_threads", run_config.RunConfig.intra_op_threads,
    "TensorFlow's threads per op (default: lerl-train's; 0: TensorFlow's "
    "choice).", lower_bound=0)


def environment_turn(num_users: int, steps: int) -> Callable[[], float]:
  """A turn of the environment alone: user-steps/s of `steps` calls of
  `PyEnvironment.step` with random actions (drawn beforehand)."""
  env = lerl_recsim.make_env(num_users=num_users, seed=0)
  env.reset()
  rng = np.random.default_rng(0)
  num_items = env.scenario.items.num_items
  actions = [rng.integers(0, num_items, num_users, dtype=np.int32)
             for _ in range(steps)]
  for action in actions[:100]:
    env.step(action)

  def turn() -> float:
    start = time.perf_counter()
    for action in actions:
      env.step(action)
    return steps * num_users / (time.perf_counter() - start)

  return turn


def warm_learner(env: Any) -> Any:
  """lerl-train's DQN learner on `env`, its graphs traced."""
  learner = dqn.build_learner(env, dataclasses.replace(
      dqn.Hyperparameters(),
      collect_steps_per_iteration=FLAGS.collect_steps_per_iteration))
  for _ in range(20):
    learner.run_iteration()
  return learner


def train(learner: Any, iterations: int) -> None:
  for _ in range(iterations):
    learner.run_iteration()


def timed_rate(learner: Any, iterations: int) -> float:
  first, start = learner.user_steps, time.perf_counter()
  train(learner, iterations)
  return (learner.user_steps - first) / (time.perf_counter() - start)


def interleaved_rates(turns: dict[str, Callable[[], float]], rounds: int
                      ) -> dict[str, float]:
  """Median user-steps/s of each turn over `rounds` rounds, the turns
  taken one after another within each round, so that they meet the same
  machine load."""
  rates: dict[str, list[float]] = {name: [] for name in turns}
  for _ in range(rounds):
    for name, turn in turns.items():
      rates[name].append(turn())
  return {name: float(np.median(values)) for name, values in rates.items()}


def planned(backend: str, replan_every: int, cache: str | None = None,
            ) -> tf_environment.PlannedTFEnvironment:
  options = {"cache_path": cache} if cache else {}
  if backend != "heuristic" and FLAGS.local_busy_share is not None:
    options["local_busy_share"] = FLAGS.local_busy_share
  return tf_environment.make_planned_tf_env(
      planner=backend, replan_every=replan_every, num_users=FLAGS.num_users,
      seed=0, wait_for_planner=False, planner_options=options)


def report(name: str, rate: float, dqn_rate: float,
           target: float | None = None) -> None:
  cost = dqn_rate / rate
  verdict = (f" (target <= {target}: {'met' if cost <= target else 'NOT met'})"
             if target else "")
  print(f"{name:30s}{rate:8.0f} user-steps/s; {cost:.2f}x dqn's time"
        f"{verdict}")


def embedded_run(replan_every: int, iterations: int, marks: list[int],
                 dqn_turn: Callable[[], float]
                 ) -> tuple[list[tuple[int, float, float, float]], float,
                            dict[str, Any]]:
  """Trains with the embedded planner in the background from
  --planner_cache (cold without it), in chunks of --embedded_chunk
  iterations with a turn of `dqn_turn` before the first and after each,
  during which the bench holds the model's lock (`exclusive()`), so that
  the model computes only while the embedded planner trains.

  Returns, at each mark and at the end: the embedded planner's time so far
  over the time `dqn` would have taken for the same user-steps (each
  chunk's at the mean rate of the `dqn` turns either side of it); the same
  with the seconds the model computed alone before `dqn`'s turns added (an
  upper bound: computing beside training, they would have cost it less);
  and the LLM's share of the plans so far; the seconds trained; and the
  planner's metrics (times and calls counted after the warm-up), with the
  seconds the model spent finishing a request alone before a `dqn` turn.
  """
  env = planned("embedded", replan_every, FLAGS.planner_cache)
  learner = warm_learner(env)
  lock = env.planner.model.exclusive()
  warm, warm_steps = env.planner_metrics(), learner.user_steps

  def paused_dqn_turn() -> tuple[float, float]:
    """(dqn's rate, seconds the model took to finish its request)."""
    start = time.perf_counter()
    with lock:
      waited = time.perf_counter() - start
      return dqn_turn(), waited

  before, alone = paused_dqn_turn()
  ends = sorted(set(range(FLAGS.embedded_chunk, iterations,
                          FLAGS.embedded_chunk)) | set(marks) | {iterations})
  seconds = dqn_seconds = 0.0
  done, so_far = 0, []
  for end in ends:
    first, start = learner.user_steps, time.perf_counter()
    train(learner, end - done)
    chunk = time.perf_counter() - start
    after, waited = paused_dqn_turn()
    alone += waited
    seconds += chunk
    dqn_seconds += (learner.user_steps - first) / ((before + after) / 2)
    done, before = end, after
    if end in marks or end == iterations:
      so_far.append((end, seconds / dqn_seconds, (seconds + alone) / dqn_seconds,
                     env.planner_metrics()["llm_plan_share"]))
  metrics = env.planner_metrics()
  env.planner.close()
  for name in ("planner_seconds", "background_busy_s", "llm_calls"):
    metrics[name] -= warm[name]
  metrics["llm_calls_per_1k_user_steps"] = (
      1000 * metrics["llm_calls"] / (learner.user_steps - warm_steps))
  metrics["model_alone_s"] = alone
  return so_far, seconds, metrics


def main(argv) -> None:
  del argv
  runner.use_intra_op_threads(FLAGS.intra_op_threads)
  users, rounds = FLAGS.num_users, FLAGS.rounds
  print(f"DQN learner: {FLAGS.collect_steps_per_iteration} collect steps of "
        f"all users per gradient step; TensorFlow threads per op: "
        f"{FLAGS.intra_op_threads or 'its choice'}")
  default_k = planner_environment.DEFAULT_REPLAN_EVERY
  learners = {DQN: tf_environment.make_tf_env(num_users=users, seed=0),
              "lerl, heuristic, K=1:": planned("heuristic", 1)}
  if default_k != 1:
    learners[f"lerl, heuristic, K={default_k}:"] = planned("heuristic",
                                                           default_k)
  turns = {ALONE: environment_turn(users, FLAGS.env_steps // rounds)}
  warmed = {name: warm_learner(env) for name, env in learners.items()}
  for name, learner in warmed.items():
    turns[name] = functools.partial(timed_rate, learner,
                                    FLAGS.iterations // rounds)
  rates = interleaved_rates(turns, rounds)
  simulator = rates.pop(ALONE)
  print(f"environment alone, random actions, {users} users: "
        f"{simulator:8.0f} user-steps/s")
  base = rates.pop(DQN)
  ratio = base / simulator
  print(f"{DQN:30s}{base:8.0f} user-steps/s; "
        f"{ratio:.2f}x the environment alone (target >= 0.5: "
        f"{'met' if ratio >= 0.5 else 'NOT met'})")
  for name, rate in rates.items():
    report(name, rate, base, 1.3 if "K=1:" in name else None)
  if not FLAGS.embedded:
    return
  # Alone, taking turns with dqn: its worker thread would load the machine
  # under the others too.
  total = FLAGS.embedded_iterations
  marks = sorted({m for m in map(int, FLAGS.embedded_marks) if 0 < m < total})
  dqn_turn = functools.partial(timed_rate, warmed[DQN],
                               FLAGS.dqn_turn_iterations)
  so_far, seconds, metrics = embedded_run(default_k, total, marks, dqn_turn)
  for mark, cost, bound, share in so_far[:-1]:
    print(f"  embedded, first {mark:,} iterations: {cost:.2f}x dqn's time "
          f"(at most {bound:.2f}x); plans by the LLM so far {share:.1%}")
  _, cost, bound, _ = so_far[-1]
  print(f"{f'lerl, embedded, K={default_k}, bg:':30s}{cost:.2f}x dqn's time, "
        f"at most {bound:.2f}x (target <= 1.5: "
        f"{'met' if bound <= 1.5 else 'met below the bound' if cost <= 1.5 else 'NOT met'})")
  cache = (f"the cache {FLAGS.planner_cache}" if FLAGS.planner_cache
           else "a cold cache")
  print(f"  over {total:,} iterations from {cache}; planner "
        f"{metrics['planner_seconds']:.1f} s of {seconds:.1f} s; plans by the "
        f"LLM {metrics['llm_plan_share']:.1%}; LLM calls "
        f"{metrics['llm_calls']:.0f} ({metrics['llm_calls_per_1k_user_steps']:.2f}"
        f" per 1,000 user-steps); model alone before dqn's turns "
        f"{metrics['model_alone_s']:.1f} s; worker busy "
        f"{metrics['background_busy_s']:.0f} s")


if __name__ == "__main__":
  app.run(main)
