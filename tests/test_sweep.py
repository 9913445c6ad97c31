"""The sweep's process pool: each child limited to its share of the cores."""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

from lerl_recsim.agents import sweep

THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                    "OMP_NUM_THREADS")


@pytest.mark.parametrize("cores, parallel, expected",
                         [(4, 1, 4), (4, 2, 2), (4, 3, 1), (2, 8, 1)])
def test_threads_per_job_shares_the_cores(monkeypatch, cores, parallel,
                                          expected):
  monkeypatch.setattr(sweep.os, "sched_getaffinity",
                      lambda pid: set(range(cores)))
  assert sweep.threads_per_job(parallel) == expected


def test_children_see_their_thread_limits(tmp_path: pathlib.Path):
  write_limits = ("import json, os, sys; json.dump({name: os.environ.get(name)"
                  f" for name in {THREAD_VARIABLES!r}}}, "
                  "open(sys.argv[1] + '/summary.json', 'w'))")
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
  for job in jobs:
    limits = json.loads((job.directory / "summary.json").read_text())
    assert limits == {name: expected for name in THREAD_VARIABLES}
