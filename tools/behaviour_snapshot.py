r"""What a refactoring must not change: the summaries of fixed-seed runs.

  python tools/behaviour_snapshot.py --out=/tmp/before.json   # on the old tree
  python tools/behaviour_snapshot.py --out=/tmp/after.json    # on the new one
  diff /tmp/before.json /tmp/after.json

Runs tiny `lerl` (embedded planner, waiting for every plan, so the run
repeats exactly), `dqn`, `ppo` and `myopic` trainings and a tiny
`lerl-compare` through the installed console scripts, then writes every
summary.json (and the comparison's results.csv) with the fields that
measure time removed and the scratch directory's path replaced.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
from typing import Any

TINY = ("--num_users=8", "--num_iterations=20", "--num_eval_sessions=16",
        "--eval_interval=10", "--checkpoint_interval=10", "--num_items=60",
        "--seed=3")
RUNS = {
    "lerl": ("--agent=lerl", "--planner=embedded", "--planner_mode=wait"),
    "dqn": ("--agent=dqn",),
    "ppo": ("--agent=ppo",),
    "myopic": ("--agent=myopic",),
}
COMPARE = ("--agents=lerl,dqn,random", "--planners=heuristic",
           "--exit_rules=satisfaction,temper", "--num_seeds=2",
           "--num_users=8", "--num_iterations=10", "--num_eval_sessions=16",
           "--num_items=60", "--reference=dqn", "--parallel=1")
TIMING_WORDS = ("wall_time", "seconds", "latency", "busy", "_per_s",
                "elapsed")
CSV_TIMING_COLUMNS = ("wall_time_s",)


def timeless(value: Any) -> Any:
  """`value` without the entries whose keys name a time measurement."""
  if isinstance(value, dict):
    return {key: timeless(item) for key, item in sorted(value.items())
            if not any(word in key for word in TIMING_WORDS)}
  if isinstance(value, list):
    return [timeless(item) for item in value]
  return value


def csv_without_timing(text: str) -> list[list[str]]:
  rows = [line.split(",") for line in text.splitlines()]
  drop = {i for i, name in enumerate(rows[0])
          if name.startswith(CSV_TIMING_COLUMNS)}
  return [[cell for i, cell in enumerate(row) if i not in drop]
          for row in rows]


def run(command: list[str]) -> None:
  finished = subprocess.run(command, capture_output=True, text=True)
  if finished.returncode:
    sys.exit(f"{' '.join(command)} failed:\n{finished.stderr[-3000:]}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, type=pathlib.Path)
  out = parser.parse_args().out
  bin_dir = pathlib.Path(sys.executable).parent
  snapshot: dict[str, Any] = {}
  with tempfile.TemporaryDirectory() as scratch:
    root = pathlib.Path(scratch)
    for name, flags in RUNS.items():
      run([str(bin_dir / "lerl-train"), *flags, *TINY,
           f"--root_dir={root / name}"])
      snapshot[name] = timeless(json.loads(
          (root / name / "summary.json").read_text()))
    run([str(bin_dir / "lerl-compare"), *COMPARE,
         f"--output_dir={root / 'compare'}",
         f"--results_dir={root / 'compare_results'}"])
    summaries = sorted((root / "compare").rglob("summary.json"))
    snapshot["compare"] = {
        str(path.parent.relative_to(root / "compare")):
            timeless(json.loads(path.read_text())) for path in summaries}
    snapshot["compare_table"] = csv_without_timing(
        (root / "compare_results" / "results.csv").read_text())
    text = json.dumps(snapshot, indent=1, sort_keys=True).replace(
        scratch, "SCRATCH")  # paths inside the scratch directory
  out.write_text(text + "\n")
  print(f"{out}: {len(RUNS)} runs, {len(summaries)} comparison runs")


if __name__ == "__main__":
  main()
