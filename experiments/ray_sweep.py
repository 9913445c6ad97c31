"""Runs a sweep's jobs as Ray tasks, on a cluster or a local Ray instance.

Each job is one task that asks Ray for `cpus_per_run` CPUs and, on whichever
node Ray places it, runs the job's command in the driver's working
directory, limited to that many threads and writing the same log as the
local pool: run directories, logs and resumption do not depend on the
executor. So the output directory must be storage that every node sees at
the same path, and every node needs the project installed at the driver's
Python path.

A task whose worker process or node dies is run again by Ray (up to
`WORKER_RETRIES` times), and the command resumes from the run's last
checkpoint. Everything else is `sweep.Executor`'s: a run killed by a signal
is started once more, a failed one is reported with its log tail, the
others go on, and progress lines count the whole sweep. Ray is imported
only when a sweep starts: it is an optional extra.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import time
from typing import Any, Callable, Sequence

from lerl_recsim.experiments import sweep

WORKER_RETRIES = 2
EXTRA = "pip install 'lerl-recsim[ray]'"
# Seconds between looks at the cluster's nodes (one joins, one dies).
CAPACITY_REFRESH_S = 5.0


def import_ray() -> Any:
  try:
    import ray
  except ImportError:
    raise ImportError(
        f"--executor=ray needs Ray; install it with: {EXTRA}") from None
  return ray


def forwarded_environment() -> dict[str, str]:
  """The driver's LERL_* settings (a planner server's URL, a data
  directory): a node started elsewhere would not have them."""
  return {name: value for name, value in os.environ.items()
          if name.startswith("LERL_")}


@dataclasses.dataclass(frozen=True)
class TaskResult:
  """One start of a job on a node, and whether that node sees it finished."""

  code: int
  seconds: float
  node: str
  finished_there: bool


def run_job(job: sweep.Job, directory: str, threads: int,
            settings: dict[str, str]) -> TaskResult:
  """In a Ray worker: runs `job` from `directory` (the driver's working
  directory, where its relative paths start) with `threads` CPU threads
  and the driver's `settings`; the command dies with the worker."""
  started = time.monotonic()
  os.chdir(directory)
  environment = {**sweep.thread_environment(threads), **settings}
  with sweep.open_log(job) as stream:
    code = sweep.start_child(job, stream, environment).wait()
  return TaskResult(code, time.monotonic() - started, socket.gethostname(),
                    job.finished)


class RaySweep(sweep.Executor):
  """Runs `jobs` on the Ray cluster at `address` (None: a local Ray instance
  started for the sweep), each as a task of `cpus_per_run` CPUs; as many
  run at once as the live nodes' CPUs hold."""

  def __init__(self, jobs: Sequence[sweep.Job], cpus_per_run: int,
               report: Callable[[str], None], address: str | None = None,
               heartbeat_s: float = 60.0):
    if (isinstance(cpus_per_run, bool) or not isinstance(cpus_per_run, int)
        or cpus_per_run < 1):
      raise ValueError(
          f"--cpus_per_run must be an int >= 1, got {cpus_per_run!r}")
    super().__init__(jobs, report, heartbeat_s)
    self._ray = import_ray()
    self._address = address
    self._cpus = cpus_per_run
    self._settings = forwarded_environment()
    self._directory = os.getcwd()
    self._task: Any = None
    self._known_capacity = (0, -math.inf)

  def _nodes(self) -> list[dict[str, Any]]:
    return [node for node in self._ray.nodes() if node["Alive"]]

  def _capacity(self) -> int:
    """Runs the live nodes' CPUs hold at once, looked up every few seconds."""
    capacity, looked = self._known_capacity
    if time.monotonic() - looked >= CAPACITY_REFRESH_S:
      capacity = sum(int(node["Resources"].get("CPU", 0) // self._cpus)
                     for node in self._nodes())
      self._known_capacity = (capacity, time.monotonic())
    return capacity

  def _describe(self) -> str:
    where = (f"the Ray cluster at {self._address}" if self._address
             else "a local Ray instance")
    return (f"on {where} ({len(self._nodes())} node(s)): up to "
            f"{self._capacity()} at once, {self._cpus} CPU(s) and thread(s) "
            "each")

  def _launch(self, job: sweep.Job) -> None:
    reference = self._task.remote(job, self._directory, self._cpus,
                                  self._settings)
    self._running[job] = (reference, time.monotonic())
    self._progress(f"started {job.name}")

  def _ended(self, job: sweep.Job, reference: Any,
             submitted: float) -> sweep.Ended:
    try:
      result = self._ray.get(reference)
    except self._ray.exceptions.RayError as error:
      cause = str(error).strip().splitlines()[0]
      return sweep.Ended(job, 1, time.monotonic() - submitted,
                         f"its Ray task failed after {WORKER_RETRIES} "
                         f"retries: {cause}")
    if result.code == 0 and result.finished_there and not job.finished:
      return sweep.Ended(
          job, 0, result.seconds,
          f"it finished on node {result.node}, but {job.directory} here "
          "holds no summary.json: the output directory must be storage "
          "every node sees at the same path")
    return sweep.Ended(job, result.code, result.seconds)

  def _collect(self, wait_s: float) -> list[sweep.Ended]:
    by_reference = {reference: job
                    for job, (reference, _) in self._running.items()}
    if not by_reference:  # waiting for a node
      time.sleep(wait_s)
      return []
    ready, _ = self._ray.wait(list(by_reference), num_returns=len(
        by_reference), timeout=wait_s)
    ended = []
    for reference in ready:
      job = by_reference[reference]
      _, submitted = self._running.pop(job)
      ended.append(self._ended(job, reference, submitted))
    return ended

  def _stop(self) -> None:
    for job, (reference, _) in self._running.items():
      self._ray.cancel(reference, force=True)  # its worker, and the command
      self._report(f"stopped {job.name}; rerun the same command to resume it")
    self._running.clear()

  def run(self) -> list[sweep.Outcome]:
    """Connects to the cluster (or starts a local instance), runs every job
    not finished yet and disconnects; returns every job's outcome."""
    ray = self._ray
    ray.init(address=self._address or "local", include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
      if not self._capacity():
        raise ValueError(
            f"no live node of the Ray cluster has {self._cpus} CPU(s) for a "
            "run (--cpus_per_run)")
      self._task = ray.remote(run_job).options(num_cpus=self._cpus,
                                               max_retries=WORKER_RETRIES)
      return super().run()
    finally:
      ray.shutdown()
