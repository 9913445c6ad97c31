"""Calibration time (fresh and cached) and stepping speed on `movielens`.

Prints:
  * loading + calibrating MovieLens the first time, into an empty cache
    directory (target < 60 s), and again from that cache (target < 5 s) —
    each the read/fit/cache step alone, and a whole `make_env` from the cache;
  * user-steps/s through `PyEnvironment.step` with random actions on
    `movielens` and on `interest_evolution` (same users, same run).
Timings move with machine load; run it on an otherwise idle machine.

Run (from the repository root, with the venv active):
  LERL_DATA_DIR=../shared/data/ml-latest-small python bench/calibration_speed.py \
      [--num_users=256] [--steps=300]
or pass --data_dir instead of LERL_DATA_DIR.
"""

from __future__ import annotations

import tempfile
import time
from typing import Callable

from absl import app, flags

import lerl_recsim  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)
import numpy as np
from lerl_recsim import environment  # noqa: F401  (TF imported before timing)
from lerl_recsim.scenarios import calibration, ratings_data

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None,
                    "MovieLens directory; default $LERL_DATA_DIR.")
flags.DEFINE_integer("num_users", 256, "Simultaneous users when stepping.")
flags.DEFINE_integer("steps", 300, "Timed steps per measurement.")
flags.DEFINE_integer("repeats", 3, "Measurements per scenario; the best is kept.")

FIRST_TARGET_S = 60.0
CACHED_TARGET_S = 5.0


def timed(function: Callable[[], object]) -> float:
  start = time.perf_counter()
  function()
  return time.perf_counter() - start


def stepping_rate(scenario: str, num_users: int, steps: int, repeats: int,
                  **overrides: object) -> float:
  """Best user-steps/s over `repeats` runs of `steps` random-action steps."""
  env = lerl_recsim.make_env(scenario, num_users=num_users, seed=0, **overrides)
  num_items = env.scenario.items.num_items
  rng = np.random.default_rng(0)
  step = lambda: env.step(rng.integers(0, num_items, num_users, dtype=np.int32))
  env.reset()
  for _ in range(5):
    step()
  rates = []
  for _ in range(repeats):
    seconds = timed(lambda: [step() for _ in range(steps)])
    rates.append(num_users * steps / seconds)
  return max(rates)


def verdict(met: bool) -> str:
  return "met" if met else "NOT met"


def main(argv: list[str]) -> None:
  del argv
  with tempfile.TemporaryDirectory(prefix="lerl_calibration_") as cache_dir:
    fit = lambda: calibration.load_or_fit(
        ratings_data.MOVIELENS, FLAGS.data_dir,
        calibration.CalibrationParams(), cache_dir)
    first = timed(fit)
    cached = timed(fit)
    calibrated, _ = fit()
    env_cached = timed(lambda: lerl_recsim.make_env(
        "movielens", num_users=FLAGS.num_users, seed=0,
        data_dir=FLAGS.data_dir, cache_dir=cache_dir))
    movielens_rate = stepping_rate(
        "movielens", FLAGS.num_users, FLAGS.steps, FLAGS.repeats,
        data_dir=FLAGS.data_dir, cache_dir=cache_dir)
  synthetic_rate = stepping_rate("interest_evolution", FLAGS.num_users,
                                 FLAGS.steps, FLAGS.repeats)
  summary = calibrated.summary()
  print(f"MovieLens: {summary['num_users']} users, {summary['num_items']} "
        f"items, {summary['num_ratings']} ratings after filtering; held-out "
        f"RMSE {summary['heldout_rmse']:.4f} (predicting the mean: "
        f"{summary['baseline_rmse']:.4f})")
  print(f"load + calibrate, first time:   {first:8.2f} s  (target < "
        f"{FIRST_TARGET_S:.0f} s: {verdict(first < FIRST_TARGET_S)})")
  print(f"load from the cache:            {cached:8.2f} s  (target < "
        f"{CACHED_TARGET_S:.0f} s: {verdict(cached < CACHED_TARGET_S)})")
  print(f"make_env('movielens'), cached:  {env_cached:8.2f} s")
  print(f"stepping, {FLAGS.num_users} users, random actions "
        f"(best of {FLAGS.repeats} x {FLAGS.steps} steps):")
  print(f"  movielens           {movielens_rate:10.0f} user-steps/s")
  print(f"  interest_evolution  {synthetic_rate:10.0f} user-steps/s")
  print(f"  ratio movielens / interest_evolution: "
        f"{movielens_rate / synthetic_rate:.2f}")


if __name__ == "__main__":
  app.run(main)
