"""The sweep's process pool: each child limited to its share of the cores."""

from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest

from lerl_recsim.experiments import sweep
from lerl_recsim.planner import chat_models
from tests.conftest import killed_job

THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                    "OMP_NUM_THREADS")


@pytest.mark.parametrize("cores, parallel, expected",
                         [(4, 1, 4), (4, 2, 2), (4, 3, 1), (2, 8, 1)])
def test_threads_per_job_shares_the_cores(monkeypatch, cores, parallel,
                                          expected):
  monkeypatch.setattr(sweep.os, "sched_getaffinity",
                      lambda pid: set(range(cores)))
  assert sweep.threads_per_job(parallel) == expected


@pytest.mark.parametrize("cores, parallel, expected", [
    (4, 2, [{0, 1}, {2, 3}]), (2, 2, [{0}, {1}]), (5, 2, [{0, 1}, {2, 3}]),
    (2, 3, None)])
def test_core_slots_are_disjoint_shares(monkeypatch, cores, parallel,
                                        expected):
  monkeypatch.setattr(sweep.os, "sched_getaffinity",
                      lambda pid: set(range(cores)))
  assert sweep.core_slots(parallel) == expected


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 2), (8, 2)])
def test_local_models_take_at_most_the_cores_they_may_use(monkeypatch, cores,
                                                          expected):
  monkeypatch.setattr(chat_models.os, "sched_getaffinity",
                      lambda pid: set(range(cores)))
  assert chat_models.local_threads() == expected


def test_children_see_their_thread_limits(tmp_path: pathlib.Path):
  write_limits = ("import json, os, sys, time; json.dump({name: "
                  f"os.environ.get(name) for name in {THREAD_VARIABLES!r}}}"
                  " | {'cores': sorted(os.sched_getaffinity(0))}, "
                  "open(sys.argv[1] + '/summary.json', 'w')); time.sleep(1)")
  jobs = []
  for index in range(2):
    directory = tmp_path / f"run{index}"
    directory.mkdir()
    jobs.append(sweep.Job(f"run{index}", (sys.executable, "-c", write_limits,
                                          str(directory)),
                          directory, tmp_path / f"run{index}.log"))
  outcomes = sweep.Sweep(jobs, parallel=2, report=lambda line: None).run()
  assert [outcome.status for outcome in outcomes] == ["finished"] * 2
  available = sorted(os.sched_getaffinity(0))
  half = len(available) // 2
  expected = str(max(1, half))  # each of the two gets half the cores
  cores = []
  for job in jobs:
    limits = json.loads((job.directory / "summary.json").read_text())
    cores.append(sorted(limits.pop("cores")))
    assert limits == {name: expected for name in THREAD_VARIABLES}
  if half:  # both ran at once, each pinned to a half of its own
    assert sorted(cores) == [available[:half], available[half:2 * half]]


def test_a_killed_run_is_reported_with_its_log_and_started_once_more(
    tmp_path: pathlib.Path):
  jobs = [killed_job(tmp_path, "once", kills=1),
          killed_job(tmp_path, "always", kills=99),
          killed_job(tmp_path, "never", kills=0)]
  lines: list[str] = []
  outcomes = sweep.Sweep(jobs, parallel=2, report=lines.append).run()
  by_name = {o.job.name: o for o in outcomes}
  assert (by_name["once"].status, by_name["once"].retries) == ("finished", 1)
  assert (by_name["always"].status, by_name["always"].retries) == ("failed", 1)
  assert (by_name["never"].status, by_name["never"].retries) == ("finished", 0)
  assert len(list((tmp_path / "always").glob("start*"))) == 2  # not 3
  retried = [line for line in lines if "once was killed by SIGKILL" in line]
  assert len(retried) == 1 and "out-of-memory" in retried[0]
  assert "starting it again" in retried[0] and "working on once" in retried[0]
  failed = [line for line in lines if "FAILED always" in line]
  assert len(failed) == 1 and "killed by SIGKILL" in failed[0]
  assert "working on always" in failed[0]
  assert lines[-1].startswith("[2/3 done, 0 running, 0 left, 1 failed")


def test_a_run_that_exits_with_an_error_is_not_retried(tmp_path: pathlib.Path):
  directory = tmp_path / "bad"
  directory.mkdir()
  job = sweep.Job("bad", (sys.executable, "-c", "raise SystemExit(2)"),
                  directory, tmp_path / "bad.log")
  lines: list[str] = []
  [outcome] = sweep.Sweep([job], parallel=1, report=lines.append).run()
  assert (outcome.status, outcome.retries) == ("failed", 0)
  assert any("FAILED bad (exit status 2)" in line for line in lines)
