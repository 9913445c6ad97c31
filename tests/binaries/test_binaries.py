"""The binaries as a user meets them: help, one-line errors, quiet runs."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Sequence

import pytest

from tests.conftest import REPO_ROOT

BIN = pathlib.Path(sys.executable).parent
TRAIN = [str(BIN / "lerl-train")]
TINY = ["--agent=dqn", "--num_users=8", "--num_iterations=20",
        "--eval_interval=10", "--log_interval=10", "--num_eval_sessions=8",
        "--num_items=40"]


def run_together(commands: Sequence[list[str]], **environment: str
                 ) -> list[subprocess.CompletedProcess]:
  """Runs `commands` at the same time (their start-up, mostly imports,
  shares the cores) and returns each one's outcome."""
  env = {name: value for name, value in os.environ.items()
         if name not in ("OPENAI_API_KEY", "OPENAI_BASE_URL",
                         "LERL_OPENAI_BASE_URL", "TF_CPP_MIN_LOG_LEVEL")}
  processes = [subprocess.Popen(command, env={**env, **environment},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for command in commands]
  outcomes = []
  for process in processes:
    stdout, stderr = process.communicate(timeout=300)
    outcomes.append(subprocess.CompletedProcess(process.args,
                                                process.returncode,
                                                stdout, stderr))
  return outcomes


def run(command: list[str], **environment: str) -> subprocess.CompletedProcess:
  return run_together([command], **environment)[0]


@pytest.mark.parametrize("command, own_flags", [
    (TRAIN, ["--agent:", "--num_users:", "--root_dir:", "--[no]traceback:"]),
    ([str(BIN / "lerl-compare")], ["--agents:", "--parallel:", "--exit_rules:"]),
    ([sys.executable, "-m", "lerl_recsim.binaries.sanity"], ["--root_dir:"]),
])
def test_help_lists_the_binarys_own_flags_and_exits_0(command, own_flags):
  short, full = run_together([command + ["--help"], command + ["--helpfull"]])
  assert short.returncode == 0, short.stderr
  for flag in own_flags:
    assert f"\n  {flag}" in short.stdout, flag
  assert "--flagfile" not in short.stdout  # absl's own flags: --helpfull
  assert full.returncode == 0, full.stderr
  assert "--flagfile" in full.stdout and own_flags[0] in full.stdout


def test_train_help_starts_with_its_usage():
  text = run(TRAIN + ["-h"]).stdout
  assert text.startswith("Trains and evaluates one agent")
  assert "lerl-train --agent=lerl --root_dir=runs/lerl" in text


BAD_INPUT = [
    (("--num_users=0",), "num_users must be an int >= 1, got 0"),
    (("--num_users=abc",), "flag --num_users=abc: invalid literal for int()"),
    (("--exit_rule=boredom",), "unknown exit rule 'boredom'; accepted: "),
    (("--scenario=movielens", "--data_dir=/no/such/dir"),
     "data directory '/no/such/dir' (from data_dir) does not exist"),
    (("--agent=lerl", "--planner=openai:gpt-4o"),
     "backend 'openai:gpt-4o' needs OPENAI_API_KEY in the environment"),
    (("--gin_bindings=dqn.train_eval.lr = 1",),
     "Configurable 'dqn.train_eval' doesn't have a parameter named 'lr'"),
]


@pytest.fixture(name="bad_input_runs", scope="module")
def bad_input_runs_fixture(tmp_path_factory
                           ) -> dict[tuple[str, ...], tuple[pathlib.Path,
                                                            subprocess.CompletedProcess]]:
  """lerl-train on each case of BAD_INPUT, all at once: its run directory
  and outcome, by the case's flags."""
  directories, commands = [], []
  for flags, _ in BAD_INPUT:
    # A data-driven scenario's catalogue size comes from its data.
    tiny = [flag for flag in TINY if "movielens" not in " ".join(flags)
            or not flag.startswith("--num_items")]
    directories.append(tmp_path_factory.mktemp("bad_input") / "run")
    commands.append(TRAIN + tiny + [f"--root_dir={directories[-1]}",
                                    *flags])
  return {flags: (directory, outcome) for (flags, _), directory, outcome in
          zip(BAD_INPUT, directories, run_together(commands))}


@pytest.mark.parametrize("flags, message", BAD_INPUT)
def test_bad_input_is_one_line_with_usage_status(bad_input_runs, flags,
                                                  message):
  directory, outcome = bad_input_runs[flags]
  assert outcome.returncode == 2
  lines = outcome.stderr.strip().splitlines()
  assert len(lines) == 1, outcome.stderr
  assert lines[0].startswith("lerl-train: error: ") and message in lines[0]
  assert not (directory / "summary.json").exists()


def test_missing_required_flag_and_traceback_on_request(tmp_path):
  missing = run(TRAIN)
  assert missing.returncode == 2
  assert missing.stderr.strip() == ("lerl-train: error: flag --root_dir=None: "
                                    "Flag --root_dir must have a value other "
                                    "than None.")
  shown = run(TRAIN + [f"--root_dir={tmp_path}", "--num_users=0",
                       "--traceback"])
  assert shown.returncode != 0
  assert "Traceback (most recent call last)" in shown.stderr
  assert "ValueError: num_users must be an int >= 1, got 0" in shown.stderr


def test_run_directory_under_a_file_is_bad_input(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  outcome = run(TRAIN + TINY + [f"--root_dir={blocker / 'run'}"])
  assert outcome.returncode == 2
  lines = outcome.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("lerl-train: error: ")
  assert str(blocker) in lines[0]
  assert blocker.read_text() == "not a directory"


FAILING_BINARY = """
from lerl_recsim.binaries import cli

def main(argv):
  raise {error}

cli.run(main, "__main__")
"""


@pytest.mark.parametrize("error, status", [
    ("RuntimeError('the model server went away')", 1),
    ("OSError(28, 'No space left on device')", 1),
    ("ValueError('bad value 7; expected 1-3')", 2),
])
def test_exit_status_tells_usage_from_runtime_errors(error, status):
  outcome = run([sys.executable, "-c", FAILING_BINARY.format(error=error)])
  assert outcome.returncode == status
  message = outcome.stderr.strip()
  assert message.startswith("-c: error: ") and "\n" not in message
  assert message.split("error: ", 1)[1].split()[-1] in error


def test_a_quiet_run_shows_progress_and_results_only(tmp_path):
  outcome = run(TRAIN + TINY + [f"--root_dir={tmp_path / 'run'}"])
  assert outcome.returncode == 0, outcome.stderr
  assert json.loads(outcome.stdout)["num_sessions"] == 8
  lines = outcome.stderr.strip().splitlines()
  progress = [line for line in lines if "] iteration " in line]
  assert len(progress) == 2 and all("ETA " in line for line in progress)
  assert sum("] evaluation at iteration" in line for line in lines) == 2
  # Nothing from TensorFlow, TF-Agents or gym: every line is an absl log
  # line of one of the project's own modules.
  project = {path.name for folder in ("agents", "experiments", "binaries",
                                       "lerl_recsim", "scenarios")
             for path in (REPO_ROOT / folder).rglob("*.py")}
  for line in lines:
    match = re.match(r"[IWE]\d{4} [\d:.]+ +\d+ (\w+\.py):\d+\] ", line)
    assert match and match.group(1) in project, line
  verbose = run(TRAIN + TINY + [f"--root_dir={tmp_path / 'again'}",
                                "--verbosity=0"])
  assert verbose.returncode == 0
  assert "Saved checkpoint" in verbose.stderr  # TF-Agents' INFO lines
