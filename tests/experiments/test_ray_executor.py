"""lerl-compare --executor=ray on a real Ray cluster on loopback: a head
node that runs nothing and a worker node, each started by `ray start` as
processes of their own. Runs whose Ray worker is killed are run again (and
resume from their checkpoint), runs that fail every time are reported, and
the table is the local executor's.

The cluster is stopped with `ray stop --force`, which stops every Ray
process on this machine.
"""

from __future__ import annotations

import csv
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import pytest

from lerl_recsim.experiments import comparison, ray_sweep, sweep
from tests.conftest import killed_job

RAY = (sys.executable, "-m", "ray.scripts.scripts")
WORKER_CPUS = 2
ENVIRONMENT = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "RAY_USAGE_STATS_ENABLED": "0"}
# Long enough (about 5 s of training) for the kill to come mid-run.
TRAIN = {"num_iterations": 40, "num_eval_sessions": 10, "num_users": 8,
         "eval_interval": 20, "log_interval": 20}


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def ray_cli(*arguments: str) -> None:
  subprocess.run([*RAY, *arguments], env=ENVIRONMENT, check=True,
                 capture_output=True, timeout=120)


@pytest.fixture(name="cluster", scope="module")
def cluster_fixture() -> Iterator[str]:
  """The head's address; the head has no CPUs, so every task runs on the
  worker node."""
  # Short: Ray's socket paths under it must fit in 107 characters.
  temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
  address = f"127.0.0.1:{free_port()}"
  loopback = ("--node-ip-address=127.0.0.1", "--disable-usage-stats")
  try:
    ray_cli("start", "--head", f"--port={address.split(':')[1]}",
            f"--ray-client-server-port={free_port()}", "--num-cpus=0",
            "--include-dashboard=false", f"--temp-dir={temp_dir}", *loopback)
    ray_cli("start", f"--address={address}", f"--num-cpus={WORKER_CPUS}",
            *loopback)
    yield address
  finally:
    subprocess.run([*RAY, "stop", "--force"], env=ENVIRONMENT,
                   capture_output=True, timeout=120)
    shutil.rmtree(temp_dir, ignore_errors=True)


def kills_its_worker(tmp_path: pathlib.Path, name: str, kills: int
                     ) -> sweep.Job:
  """A job whose command kills the Ray worker running it (SIGKILL, as the
  kernel's out-of-memory killer would) on its first `kills` starts."""
  directory = tmp_path / name
  directory.mkdir()
  script = ("import os, pathlib, signal, sys; d = pathlib.Path(sys.argv[1]); "
            "n = len(list(d.glob('start*'))); (d / f'start{n}').touch(); "
            "print('working on', d.name, flush=True); "
            f"os.kill(os.getppid(), signal.SIGKILL) if n < {kills} else "
            "(d / 'summary.json').write_text('{}')")
  return sweep.Job(name, (sys.executable, "-c", script, str(directory)),
                   directory, tmp_path / f"{name}.log")


def test_dead_workers_are_retried_and_failures_reported(cluster, tmp_path):
  jobs = [kills_its_worker(tmp_path, "worker_dies_once", kills=1),
          kills_its_worker(tmp_path, "worker_always_dies", kills=99),
          killed_job(tmp_path, "killed_once", kills=1),
          killed_job(tmp_path, "fine", kills=0)]
  lines: list[str] = []
  outcomes = ray_sweep.RaySweep(jobs, 1, lines.append, cluster).run()
  by_name = {o.job.name: (o.status, o.retries) for o in outcomes}
  assert by_name == {"worker_dies_once": ("finished", 0),
                     "worker_always_dies": ("failed", 0),
                     "killed_once": ("finished", 1), "fine": ("finished", 0)}
  starts = {job.name: len(list(job.directory.glob("start*"))) for job in jobs}
  assert starts == {"worker_dies_once": 2,
                    "worker_always_dies": 1 + ray_sweep.WORKER_RETRIES,
                    "killed_once": 2, "fine": 1}
  assert f"(2 node(s)): up to {WORKER_CPUS} at once, 1 CPU(s)" in lines[0]
  [failed] = [line for line in lines if "FAILED worker_always_dies" in line]
  assert "failed after 2 retries: The worker died" in failed
  assert "working on worker_always_dies" in failed  # the log's tail
  assert any("killed_once was killed by SIGKILL" in line for line in lines)
  assert lines[-1].startswith("[3/4 done, 0 running, 0 left, 1 failed")


def test_without_an_address_a_local_instance_runs_the_jobs(tmp_path):
  lines: list[str] = []
  [outcome] = ray_sweep.RaySweep([killed_job(tmp_path, "fine", kills=0)], 1,
                                 lines.append).run()
  assert outcome.status == "finished"
  assert "on a local Ray instance (1 node(s))" in lines[0]


def test_a_missing_ray_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, "ray", None)
  with pytest.raises(ImportError, match=r"^--executor=ray needs Ray; install "
                     r"it with: pip install 'lerl-recsim\[ray\]'$"):
    ray_sweep.RaySweep([], 1, print)


def test_ray_settings_without_the_ray_executor_are_refused(tmp_path):
  refused = subprocess.run(
      [sys.executable, "-m", "lerl_recsim.binaries.compare", "--agents=random",
       "--reference=random", f"--output_dir={tmp_path}", "--cpus_per_run=2"],
      env=ENVIRONMENT, capture_output=True, text=True, timeout=120)
  assert refused.returncode == 2
  assert refused.stderr.strip().splitlines()[-1].endswith(
      ": error: --cpus_per_run: only with --executor=ray")
  assert not list(tmp_path.iterdir())  # nothing claimed, nothing run


def compare(output: pathlib.Path, *flags: str, checkpoint_interval: int,
            agents: tuple[str, ...] = ("random", "dqn"), num_seeds: int = 2
            ) -> tuple[subprocess.Popen, dict[tuple[str, int],
                                              comparison.ComparisonRun]]:
  """A tiny lerl-compare, started, and its runs by (agent, seed)."""
  command = [sys.executable, "-m", "lerl_recsim.binaries.compare",
             f"--agents={','.join(agents)}", f"--num_seeds={num_seeds}",
             "--num_items=40", f"--output_dir={output}",
             f"--checkpoint_interval={checkpoint_interval}", *flags] + [
                 f"--{name}={value}" for name, value in TRAIN.items()]
  runs = comparison.grid(
      ["interest_evolution"], [comparison.ExitRuleChoice("satisfaction")],
      [comparison.Method(agent) for agent in agents], num_seeds)
  process = subprocess.Popen(command, env=ENVIRONMENT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  return process, {(run.method.agent, run.seed): run for run in runs}


def processes() -> dict[int, str]:
  """Every process's command line by process id."""
  found = {}
  for entry in pathlib.Path("/proc").iterdir():
    try:
      found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(
          b"\0", b" ").decode()
    except (OSError, ValueError):
      continue
  return found


def kill_worker_of(directory: pathlib.Path, when: pathlib.Path,
                   sweep_process: subprocess.Popen) -> None:
  """Once `when` exists, kills the Ray worker running the run in `directory`
  with SIGKILL, and sees the run's `lerl-train` process die with it."""
  # Generous: Ray's start and the run's first graph traces took over 300 s
  # on two loaded cores; a sweep that ended fails the loop at once.
  deadline = time.monotonic() + 600
  while not when.exists():
    if sweep_process.poll() is not None:
      pytest.fail(f"the sweep ended (exit status {sweep_process.returncode}) "
                  f"before {when} existed; its output:\n"
                  f"{sweep_process.stdout.read()}")
    assert time.monotonic() < deadline, f"timed out before {when} existed"
    time.sleep(0.05)
  [trainer] = [pid for pid, command in processes().items()
               if f"--root_dir={directory} " in command]
  status = pathlib.Path(f"/proc/{trainer}/status").read_text()
  worker = int(status.split("PPid:")[1].split()[0])
  assert processes()[worker].startswith("ray::run_job")
  os.kill(worker, signal.SIGKILL)
  deadline = time.monotonic() + 30
  while trainer in processes():
    assert time.monotonic() < deadline, "the run outlived its Ray worker"
    time.sleep(0.05)


def results_without_wall_time(output: pathlib.Path) -> tuple[list, str]:
  """results.csv's rows and results.md after its header (the command), less
  wall time: the only column measured, not computed from the runs."""
  rows = [{key: value for key, value in row.items()
           if not key.startswith("wall_time_s")} for row in
          csv.DictReader((output / "results.csv").read_text().splitlines())]
  markdown = (output / "results.md").read_text()
  body = markdown[markdown.index("\n## "):].splitlines()
  return rows, "\n".join(line.rsplit(" | ", 1)[0] if line.startswith("| ")
                         else line for line in body)


def test_a_run_whose_worker_dies_resumes_and_the_table_is_the_local_one(
    cluster, tmp_path):
  """The worker running dqn's run is killed after the run's first
  checkpoint: Ray runs it again, it resumes from that checkpoint, and the
  table and plots are the local executor's, whose runs were never
  interrupted (a resumed run repeats the uninterrupted one)."""
  output = tmp_path / "ray"
  interval = TRAIN["num_iterations"] // 4
  on_ray, runs = compare(output, "--executor=ray", f"--ray_address={cluster}",
                         "--cpus_per_run=1", num_seeds=1,
                         checkpoint_interval=interval)
  killed = runs["dqn", 0]
  kill_worker_of(killed.directory(output), killed.directory(output) /
                 "train" / "checkpoints" / "checkpoint", on_ray)
  ray_output, _ = on_ray.communicate(timeout=600)
  assert on_ray.returncode == 0, ray_output
  assert "up to 2 at once, 1 CPU(s) and thread(s) each" in ray_output
  assert "[2/2 done, 0 running, 0 left, 0 failed" in ray_output
  log = killed.log(output).read_text()
  assert log.count("=== ") == 2 and "resuming" in log
  local, _ = compare(tmp_path / "local", "--parallel=2", num_seeds=1,
                     checkpoint_interval=interval)
  local_output, _ = local.communicate(timeout=600)
  assert local.returncode == 0, local_output
  assert results_without_wall_time(output) == \
      results_without_wall_time(tmp_path / "local")
  for plot in ("learning_curves.png", "category_exposure.png"):
    assert (output / plot).read_bytes() == \
        (tmp_path / "local" / plot).read_bytes()
