"""Runs many training processes, a few at a time, with progress for all.

Each job is a separate process, so one run that crashes (or leaks memory)
cannot take the others down; its output goes to a log file whose tail is
reported. A job killed by a signal (the kernel's out-of-memory killer, an
operator) is reported and started once more, resuming from its last
checkpoint; a job that exits with an error is not retried (it would fail the
same way). A job whose directory already holds `summary.json` is not started
again. Children are stopped when the sweep stops, even if it is killed, so a
rerun never races a leftover process for the same run directory.

`Executor` holds these rules and the progress lines; `Sweep` runs the jobs
on this machine, `ray_sweep.RaySweep` on a Ray cluster.
"""

from __future__ import annotations

import abc
import ctypes
import dataclasses
import datetime
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any, Callable, IO, Sequence

TAIL_LINES = 25
PR_SET_PDEATHSIG = 1
RETRIES_AFTER_A_KILL = 1


@dataclasses.dataclass(frozen=True)
class Job:
  """One process: `command` must leave `directory`/summary.json on success."""

  name: str
  command: tuple[str, ...]
  directory: pathlib.Path
  log: pathlib.Path

  @property
  def finished(self) -> bool:
    return (self.directory / "summary.json").exists()


@dataclasses.dataclass(frozen=True)
class Outcome:
  """How a job ended: "reused", "finished" or "failed" (with its log tail),
  and how often it was started again after being killed."""

  job: Job
  status: str
  seconds: float = 0.0
  tail: str = ""
  retries: int = 0


def exit_text(code: int) -> str:
  """A child's return code in words; a negative one is a signal."""
  if code >= 0:
    return f"exit status {code}"
  name = signal.Signals(-code).name
  cause = (" (the kernel's out-of-memory killer sends it when memory runs "
           "out)" if -code == signal.SIGKILL else "")
  return f"killed by {name}{cause}"


def _die_with_parent() -> None:
  """In the child: the kernel sends SIGTERM if the sweep process dies."""
  ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def log_tail(path: pathlib.Path, lines: int = TAIL_LINES) -> str:
  text = path.read_text(errors="replace") if path.exists() else ""
  return "\n".join(text.splitlines()[-lines:])


def threads_per_job(parallel: int) -> int:
  """The CPU threads each of `parallel` jobs may use: this machine's cores
  shared out, at least one."""
  return max(1, len(os.sched_getaffinity(0)) // parallel)


def core_slots(parallel: int) -> list[frozenset[int]] | None:
  """The cores each of `parallel` jobs at once is pinned to, disjoint; None
  when there are fewer cores than jobs (they then share them all). Pinned,
  a run's helper threads (an in-process LLM) take its own core's time,
  not its neighbour's."""
  cores = sorted(os.sched_getaffinity(0))
  if parallel > len(cores):
    return None
  size = len(cores) // parallel
  return [frozenset(cores[i * size:(i + 1) * size]) for i in range(parallel)]


def thread_environment(threads: int) -> dict[str, str]:
  """The environment of a child limited to `threads` CPU threads.

  TensorFlow and OpenMP size their pools by the whole machine, not by a
  child's share of it: on two cores, two short `dqn` runs at once took 30.7 s
  with their own pools and 25.3 s limited to one thread each.
  """
  limits = {name: str(threads) for name in (
      "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")}
  return {**os.environ, **limits}


def elapsed_text(seconds: float) -> str:
  return str(datetime.timedelta(seconds=int(seconds)))


@dataclasses.dataclass(frozen=True)
class Ended:
  """A job that stopped: the child's return code (negative: a signal), or
  `lost`, why the executor could not run it to its end."""

  job: Job
  code: int
  seconds: float
  lost: str = ""


def open_log(job: Job) -> IO[bytes]:
  """The job's log, opened to append one start's output under a header."""
  job.log.parent.mkdir(parents=True, exist_ok=True)
  stream = job.log.open("ab")
  stream.write(f"=== {datetime.datetime.now().isoformat(timespec='seconds')}"
               f": {' '.join(job.command)}\n".encode())
  stream.flush()
  return stream


def start_child(job: Job, stream: IO[bytes], environment: dict[str, str],
                cores: frozenset[int] | None = None) -> subprocess.Popen:
  """Starts the job's command writing to `stream`, on `cores` if given; it
  dies with the process that started it."""

  def in_child() -> None:
    _die_with_parent()
    if cores is not None:
      os.sched_setaffinity(0, cores)

  return subprocess.Popen(
      job.command, stdout=stream, stderr=subprocess.STDOUT,
      stdin=subprocess.DEVNULL, env=environment,
      preexec_fn=in_child if sys.platform == "linux" else None)


class Executor(abc.ABC):
  """What every way of running a sweep shares: finished jobs are reused, a
  job killed by a signal is started once more, a failed one is reported
  with its log tail, and progress lines count the whole sweep.

  A subclass starts jobs (`_launch`), hands back those that stopped
  (`_collect`) and stops the rest when the sweep ends (`_stop`); `_running`
  maps each job it runs to its own handle.
  """

  def __init__(self, jobs: Sequence[Job], report: Callable[[str], None],
               heartbeat_s: float = 60.0):
    self._jobs = list(jobs)
    self._report = report
    self._heartbeat_s = heartbeat_s
    self._outcomes: list[Outcome] = []
    self._retries: dict[Job, int] = {}
    self._pending: list[Job] = []
    self._running: dict[Job, Any] = {}
    self._start = time.monotonic()

  @abc.abstractmethod
  def _describe(self) -> str:
    """How jobs run, for the first progress line."""

  @abc.abstractmethod
  def _capacity(self) -> int:
    """How many jobs may run at once now."""

  @abc.abstractmethod
  def _launch(self, job: Job) -> None:
    """Starts `job` and adds it to `_running`."""

  @abc.abstractmethod
  def _collect(self, wait_s: float) -> list[Ended]:
    """Removes the jobs that stopped from `_running`, waiting up to
    `wait_s` for one."""

  @abc.abstractmethod
  def _stop(self) -> None:
    """Stops every job still running (they resume when rerun)."""

  def _progress(self, event: str) -> None:
    done = sum(o.status != "failed" for o in self._outcomes)
    failed = len(self._outcomes) - done
    left = len(self._jobs) - len(self._outcomes) - len(self._running)
    self._report(
        f"[{done}/{len(self._jobs)} done, {len(self._running)} running, "
        f"{left} left, {failed} failed | elapsed "
        f"{elapsed_text(time.monotonic() - self._start)}] {event}")

  def _settle(self, ended: Ended) -> None:
    """Records how a job ended, or queues it again if a signal killed it."""
    job, code, seconds = ended.job, ended.code, ended.seconds
    retries = self._retries.get(job, 0)
    if not ended.lost and code == 0 and job.finished:
      self._outcomes.append(Outcome(job, "finished", seconds, retries=retries))
      self._progress(f"finished {job.name} ({seconds:.0f} s)")
      return
    tail = log_tail(job.log)
    if not ended.lost and code < 0 and retries < RETRIES_AFTER_A_KILL:
      self._retries[job] = retries + 1
      self._pending.insert(0, job)
      self._progress(f"{job.name} was {exit_text(code)}; starting it again "
                     f"from its last checkpoint. Log {job.log}, last "
                     f"lines:\n{tail}")
      return
    self._outcomes.append(Outcome(job, "failed", seconds, tail, retries))
    self._progress(f"FAILED {job.name} ({ended.lost or exit_text(code)}); "
                   f"log {job.log}, last lines:\n{tail}")

  def run(self) -> list[Outcome]:
    """Runs every job not finished yet; returns every job's outcome."""
    pending = self._pending
    for job in self._jobs:
      if job.finished:
        self._outcomes.append(Outcome(job, "reused"))
      else:
        pending.append(job)
    self._progress(f"{len(self._outcomes)} finished run(s) reused; "
                   f"{self._describe()}")
    last_beat = time.monotonic()
    try:
      while pending or self._running:
        while pending and len(self._running) < self._capacity():
          self._launch(pending.pop(0))
        for ended in self._collect(wait_s=0.2):
          self._settle(ended)
        if time.monotonic() - last_beat >= self._heartbeat_s:
          last_beat = time.monotonic()
          self._progress("still running: " + ", ".join(
              job.name for job in self._running))
    finally:
      self._stop()
    return self._outcomes


class Sweep(Executor):
  """Runs `jobs` on this machine with at most `parallel` processes at once,
  each limited to its share of the machine's cores (`threads_per_job`)
  and, where there are as many cores as jobs, pinned to cores of its own
  (`core_slots`)."""

  def __init__(self, jobs: Sequence[Job], parallel: int,
               report: Callable[[str], None], heartbeat_s: float = 60.0):
    super().__init__(jobs, report, heartbeat_s)
    self._parallel = parallel
    self._threads = threads_per_job(parallel)
    self._environment = thread_environment(self._threads)
    self._slots = core_slots(parallel)
    self._free_slots = list(range(parallel))

  def _describe(self) -> str:
    pinned = ("" if self._slots is None else
              ", each on cores " + " / ".join(
                  ",".join(map(str, sorted(cores))) for cores in self._slots))
    return (f"up to {self._parallel} at once, {self._threads} CPU thread(s) "
            f"each{pinned}")

  def _capacity(self) -> int:
    return self._parallel

  def _launch(self, job: Job) -> None:
    stream = open_log(job)
    slot = self._free_slots.pop(0)
    cores = None if self._slots is None else self._slots[slot]
    process = start_child(job, stream, self._environment, cores)
    self._running[job] = (process, stream, time.monotonic(), slot)
    self._progress(f"started {job.name}")

  def _collect(self, wait_s: float) -> list[Ended]:
    time.sleep(wait_s)
    ended = []
    for job, (process, stream, started, slot) in list(self._running.items()):
      code = process.poll()
      if code is None:
        continue
      stream.close()
      del self._running[job]
      self._free_slots.append(slot)
      ended.append(Ended(job, code, time.monotonic() - started))
    return ended

  def _stop(self) -> None:
    for process, *_ in self._running.values():
      process.terminate()
    for job, (process, stream, *_) in self._running.items():
      try:
        process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
      stream.close()
      self._report(f"stopped {job.name}; rerun the same command to resume it")
    self._running.clear()
