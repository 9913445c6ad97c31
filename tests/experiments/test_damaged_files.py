"""Damaged files and full disks: one clear error, nothing overwritten.

A full disk is a real one for the process: the tests lower its file-size
limit (RLIMIT_FSIZE, with SIGXFSZ ignored), so that writes past it fail with
EFBIG as they would with ENOSPC.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from lerl_recsim import results
from lerl_recsim.experiments import run_config, runner, train
from lerl_recsim.planner import ReflectionPool, make_planner

BIN = pathlib.Path(sys.executable).parent
TINY_TRAIN = [str(BIN / "lerl-train"), "--agent=dqn", "--num_users=4",
              "--num_iterations=4", "--checkpoint_interval=2",
              "--eval_interval=4", "--log_interval=2", "--num_eval_sessions=4",
              "--num_items=40"]
# The file-size limit, in bytes: above config.json, TensorBoard's event files
# and the summary, below a checkpoint (its replay buffer is megabytes).
SMALL_DISK = 512 * 1024


def limited(limit: int) -> list[str]:
  """A Python prefix that runs the rest of argv under a file-size limit."""
  return [sys.executable, "-c", textwrap.dedent(f"""
      import os, resource, signal, sys
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
      resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
      os.execv(sys.argv[1], sys.argv[1:])
      """)]


def damage(path: pathlib.Path) -> bytes:
  """Truncates `path` to half; returns what it then holds."""
  data = path.read_bytes()[: max(path.stat().st_size // 2, 1)]
  path.write_bytes(data)
  return data


def test_damaged_config_json_stops_the_run_and_is_kept(tmp_path):
  run = run_config.RunConfig(agent="random", num_eval_sessions=4,
                             scenario_overrides={"num_items": 40})
  train.train_eval(run, str(tmp_path))
  (tmp_path / "summary.json").unlink()
  kept = damage(tmp_path / "config.json")
  with pytest.raises(results.DamagedFileError,
                     match=r"config.json is damaged \(.*\); it identifies "
                     r"the run in .*remove that directory"):
    train.train_eval(run, str(tmp_path))
  assert (tmp_path / "config.json").read_bytes() == kept


def test_damaged_reflection_pool_is_reported_on_resume_and_kept(tmp_path):
  pool = ReflectionPool()
  pool.add("Rotate the genres.", 3.0)
  path = tmp_path / "reflections.json"
  pool.save(path)
  kept = damage(path)
  run = run_config.RunConfig(agent="lerl", planner="fake", num_users=4,
                             scenario_overrides={"num_items": 40})
  with pytest.raises(results.DamagedFileError,
                     match=r"reflections.json is damaged .* remove it to go "
                     r"on with an empty pool"):
    runner.build_environments(run, 0, path)
  assert path.read_bytes() == kept
  path.write_text(json.dumps({"format": "lerl-recsim/reflections/1", "capacity": 2,
                              "beta": 1.0, "entries": [{"lesson": "x"}]}))
  with pytest.raises(results.DamagedFileError, match=(
      r"reflections.json is damaged \(an entry is malformed: "
      r"KeyError\('cumulative_reward'\)\); remove it")):
    ReflectionPool.load(path)


def test_damaged_llm_cache_is_reported_before_any_request(tmp_path):
  path = tmp_path / "cache.sqlite"
  planner = make_planner("fake", model_options={"responses": ["{}"]},
                         cache_path=str(path))
  planner.plan([])  # creates the database
  assert path.stat().st_size > 0
  path.write_bytes(b"SQLite format 3\x00" + b"\x17" * 600)
  with pytest.raises(results.DamagedFileError,
                     match=r"cache.sqlite is damaged \(not a readable SQLite "
                     r"database.*\); remove it"):
    make_planner("fake", model_options={"responses": ["{}"]},
                 cache_path=str(path))
  assert path.read_bytes() == b"SQLite format 3\x00" + b"\x17" * 600


def test_a_full_disk_leaves_the_saved_summary_intact(tmp_path):
  path = tmp_path / "summary.json"
  results.write_json_atomic(path, {"cumulative_reward": 1.0})
  before = path.read_bytes()
  script = (f"from lerl_recsim import results; results.write_json_atomic("
            f"{str(path)!r}, {{'padding': 'x' * 100000}})")
  outcome = subprocess.run(limited(4096) + [sys.executable, "-c", script],
                           capture_output=True, text=True, timeout=120)
  assert outcome.returncode == 1
  assert (f"OSError: [Errno 27] could not write {path} (File too large); the "
          "previous version, if any, is intact") in outcome.stderr
  assert path.read_bytes() == before
  assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_full_disk_at_a_checkpoint_stops_the_run_which_then_resumes(
    tmp_path):
  root = tmp_path / "run"
  command = TINY_TRAIN + [f"--root_dir={root}"]
  environment = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1",
                 "TF_NUM_INTEROP_THREADS": "1"}
  full = subprocess.run(limited(SMALL_DISK) + command, capture_output=True,
                        text=True, timeout=300, env=environment)
  assert full.returncode == 1, full.stderr[-2000:]
  errors = [line for line in full.stderr.splitlines()
            if line.startswith("lerl-train: error: ")]
  assert len(errors) == 1 and "could not write a checkpoint in " in errors[0]
  assert "the previous checkpoint is intact" in errors[0]
  assert "Traceback" not in full.stderr
  assert json.loads((root / "config.json").read_text())["run"]["agent"] == "dqn"
  assert not (root / "summary.json").exists()
  again = subprocess.run(command, capture_output=True, text=True, timeout=300,
                         env=environment)
  assert again.returncode == 0, again.stderr[-2000:]
  assert json.loads((root / "summary.json").read_text())["iterations"] == 4
