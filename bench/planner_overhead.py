"""What the LLM planner costs: calls, cache hits and share of wall time, per K.

For each K in --ks, a fresh planned environment (fresh in-memory cache) runs
--user_steps user-steps driven by --driver (by default lerl-train's DQN,
collecting and training on the TensorFlow-native environment, as
lerl-train does; the random driver steps the Python environment), and the
planner's LLM calls per 1,000 user-steps,
cache hit rate and share of the loop's wall time are printed, cumulative and
over the last quarter of the run (the steady state a long training run
approaches). Then the heuristic backend at the default K, and the
per-request latency of the model (distinct situations, uncached). A K whose
run exceeds --max_seconds stops early and says so.

--planner_mode is lerl-train's: `background` (its default; training never
waits, users the LLM has not answered yet get the heuristic plan, and the
share of users planned by the LLM is printed) or `wait`.

Run (about 5 minutes on 2 cores):
  python bench/planner_overhead.py
Options: --backend=gguf:/path/model.gguf --ks=1,5,10 --user_steps=256000
  --num_users=64 --max_seconds=150 --planner_mode=wait --driver=random
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from absl import app, flags

import lerl_recsim  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)
import numpy as np

from lerl_recsim import tf_environment
from lerl_recsim.agents import dqn, scripted_policies
from lerl_recsim.experiments import run_config
from lerl_recsim.planner import StepRecord, UserHistory, make_planner
from lerl_recsim.planner_environment import (DEFAULT_REPLAN_EVERY,
                                             SCENARIO_PROMPT_CONFIG,
                                             PlannedEnvironment,
                                             make_planned_env)

FLAGS = flags.FLAGS
flags.DEFINE_string("backend", "embedded", "Planner backend to measure.")
flags.DEFINE_list("ks", ["1", "5", "10"], "Replanning intervals K.")
flags.DEFINE_integer("num_users", 64, "Simultaneous users.")
flags.DEFINE_integer("user_steps", 256_000, "User-steps per K.")
flags.DEFINE_float("max_seconds", 150.0, "Wall-time cap per K.")
flags.DEFINE_integer("history_window", SCENARIO_PROMPT_CONFIG.history_window,
                     "Steps shown in the planner prompt.")
flags.DEFINE_enum("driver", "dqn", ["dqn", "random"], "What acts and "
                  "learns: 'dqn' (lerl-train's DQN: collect and train) or "
                  "'random' (the random sanity policy; no learning).")
flags.DEFINE_enum("planner_mode", run_config.RunConfig.planner_mode,
                  run_config.PLANNER_MODES, "How training waits for the LLM.")
flags.DEFINE_integer("latency_probes", 20, "Uncached requests timed.")
flags.DEFINE_integer("seed", 0, "Seed of scenario and planner.")

CALLS_TARGET = 50.0   # LLM calls per 1,000 user-steps.
SHARE_TARGET = 0.25   # Planner share of wall time.

# A driver gets the environment and returns what advances its loop by one
# round: one step of a fixed policy, or one collect-and-train iteration.
Driver = Callable[[Any], Callable[[], None]]


def random_driver(env: PlannedEnvironment) -> Callable[[], None]:
  policy = scripted_policies.RandomPolicy(env, seed=FLAGS.seed)
  state = {"time_step": env.reset()}

  def advance() -> None:
    state["time_step"] = env.step(policy.action(state["time_step"]).action)

  return advance


def dqn_driver(env: Any) -> Callable[[], None]:
  return dqn.build_learner(env, dqn.Hyperparameters()).run_iteration


DRIVERS: dict[str, Driver] = {"dqn": dqn_driver, "random": random_driver}


def planned_env(backend: str, replan_every: int, wait: bool,
                options: dict[str, Any] | None) -> Any:
  """The planned environment the driver steps: TensorFlow-native for the
  DQN driver (lerl-train's training path), Python for the random policy."""
  make = (tf_environment.make_planned_tf_env if FLAGS.driver == "dqn"
          else make_planned_env)
  return make(planner=backend, replan_every=replan_every,
              num_users=FLAGS.num_users, seed=FLAGS.seed,
              wait_for_planner=wait, planner_options=options)


def run(env: Any, driver: Driver, user_steps: int,
        max_seconds: float) -> dict[str, Any]:
  """Drives env for user_steps; cumulative and last-quarter figures."""
  advance = driver(env)
  start = time.perf_counter()
  snapshot: tuple[float, dict[str, float]] | None = None
  metrics = env.planner_metrics()
  stopped = False
  while metrics["user_steps"] < user_steps:
    if time.perf_counter() - start > max_seconds:
      stopped = True
      break
    advance()
    metrics = env.planner_metrics()
    if snapshot is None and metrics["user_steps"] >= 0.75 * user_steps:
      snapshot = (time.perf_counter(), metrics)
  wall = time.perf_counter() - start
  out = {"metrics": metrics, "wall_s": wall, "stopped_early": stopped}
  if snapshot is not None and not stopped:
    t0, m0 = snapshot
    steps = metrics["user_steps"] - m0["user_steps"]
    out["tail"] = {
        "calls_per_1k": 1000 * (metrics["llm_calls"] - m0["llm_calls"]) / steps,
        "share": (metrics["planner_seconds"] - m0["planner_seconds"])
                 / (time.perf_counter() - t0)}
  return out


def report(label: str, result: dict[str, Any]) -> None:
  m = result["metrics"]
  share = m["planner_seconds"] / result["wall_s"]
  fallbacks = ", ".join(f"{k[9:]} {m[k]:.0f}" for k in sorted(m)
                        if k.startswith("fallback_"))
  print(f"{label}: {m['user_steps']:.0f} user-steps in {result['wall_s']:.1f} s"
        + (" (STOPPED EARLY at --max_seconds)" if result["stopped_early"]
           else ""))
  print(f"  LLM calls {m['llm_calls']:.0f} (plans {m.get('plan_llm_calls', 0):.0f},"
        f" lessons {m.get('reflection_requests', 0):.0f}) = "
        f"{m['llm_calls_per_1k_user_steps']:.2f} per 1,000 user-steps; "
        f"planned users {m['planned_users_per_1k_user_steps']:.0f} per 1,000")
  print(f"  cache hit rate {m.get('cache_hit_rate', 0):.3f} (hits "
        f"{m['cache_hits']:.0f}, in-batch shared {m.get('shared_requests', 0):.0f});"
        f" fallbacks {m['fallbacks']:.0f} ({fallbacks or 'none'}); "
        f"widenings {m['widenings']:.0f}")
  print(f"  planner {m['planner_seconds']:.1f} s = {share:.1%} of wall time")
  if "plan_llm_calls" in m:  # an LLM planner
    print(f"  users planned by the LLM: {m.get('llm_plan_share', 0):.1%} "
          f"({m.get('llm_plans', 0):.0f}); provisional heuristic plans "
          f"{m.get('provisional_plans', 0):.0f}; background worker busy "
          f"{m.get('background_busy_s', 0):.0f} s, "
          f"{m.get('background_pending', 0):.0f} requests still queued")
  if "tail" in result:
    tail = result["tail"]
    print(f"  last quarter: {tail['calls_per_1k']:.2f} LLM calls per 1,000 "
          f"user-steps, planner {tail['share']:.1%} of wall time")


def latency_probe(backend: str, probes: int) -> np.ndarray:
  """Seconds per uncached request: distinct one-step situations, one by one."""
  planner = make_planner(backend, reflections=None,
                         prompt_config=SCENARIO_PROMPT_CONFIG)
  planner.plan([UserHistory()])  # Loads the model; not timed.
  num = planner.catalogue.num_categories
  times = []
  for i in range(probes):
    history = UserHistory((StepRecord((i % num,), 0.8 * (i // num % 2), True),),
                          1 + i // (2 * num), 0.0)
    start = time.perf_counter()
    planner.plan([history])
    times.append(time.perf_counter() - start)
  return np.asarray(times)


def main(argv: list[str]) -> None:
  del argv
  ks = [int(k) for k in FLAGS.ks]
  driver = DRIVERS[FLAGS.driver]
  prompt_config = dataclasses.replace(SCENARIO_PROMPT_CONFIG,
                                      history_window=FLAGS.history_window)
  results = {}
  for k in ks:
    env = planned_env(FLAGS.backend, k, FLAGS.planner_mode == "wait",
                      None if FLAGS.backend == "heuristic"
                      else {"prompt_config": prompt_config})
    results[k] = run(env, driver, FLAGS.user_steps, FLAGS.max_seconds)
    report(f"{FLAGS.backend}, K={k}, {FLAGS.planner_mode}", results[k])
    env.planner.close()
  env = planned_env("heuristic", DEFAULT_REPLAN_EVERY, True, None)
  report(f"heuristic, K={DEFAULT_REPLAN_EVERY}",
         run(env, driver, FLAGS.user_steps, FLAGS.max_seconds))
  if FLAGS.latency_probes > 0 and FLAGS.backend != "heuristic":
    lat = latency_probe(FLAGS.backend, FLAGS.latency_probes)
    print(f"{FLAGS.backend} per-request latency over {lat.size} uncached "
          f"requests: mean {lat.mean():.3f} s, p50 {np.percentile(lat, 50):.3f}"
          f" s, p95 {np.percentile(lat, 95):.3f} s")
  if DEFAULT_REPLAN_EVERY in results:
    result = results[DEFAULT_REPLAN_EVERY]
    m = result["metrics"]
    calls = m["llm_calls_per_1k_user_steps"]
    share = m["planner_seconds"] / result["wall_s"]
    tail = result.get("tail", {})
    print(f"targets at the default K={DEFAULT_REPLAN_EVERY} "
          f"(driver {FLAGS.driver}, planner_mode {FLAGS.planner_mode}):")
    print(f"  <= {CALLS_TARGET:.0f} LLM calls per 1,000 user-steps: "
          f"{'MET' if calls <= CALLS_TARGET else 'NOT MET'} ({calls:.2f})")
    print(f"  <= {SHARE_TARGET:.0%} planner share of wall time: "
          f"{'MET' if share <= SHARE_TARGET else 'NOT MET'} ({share:.1%}"
          + (f"; last quarter {tail['share']:.1%})" if tail else ")"))
    if result["stopped_early"]:
      print("  (the run stopped early: figures cover fewer user-steps)")


if __name__ == "__main__":
  app.run(main)
