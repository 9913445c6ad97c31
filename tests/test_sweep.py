"""The sweep's process pool: each child limited to its share of the cores."""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

from lerl_recsim.agents import sweep
from lerl_recsim.planner import chat_models

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
  expected = str(sweep.threads_per_job(2))
  cores = []
  for job in jobs:
    limits = json.loads((job.directory / "summary.json").read_text())
    cores.append(set(limits.pop("cores")))
    assert limits == {name: expected for name in THREAD_VARIABLES}
  slots = sweep.core_slots(2)
  if slots is not None:  # both ran at once, each on cores of its own
    assert sorted(map(sorted, cores)) == sorted(map(sorted, slots))
