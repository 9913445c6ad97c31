r"""A comparison's finished runs as a small record that lerl-compare reads.

  python tools/archive_comparison.py runs/reference docs/results/reference

Copies OUTPUT_DIR/comparison.json and, of every run that has finished
(its summary.json exists), summary.json, config.json, operative_config.gin
and eval/history.jsonl, keeping the layout; checkpoints, policies, logs and
TensorBoard events stay behind. `lerl-compare --output_dir=DEST` with the
comparison's flags then reuses those runs, writes the table and plots from
them, and runs only what is missing. Files already in DEST are replaced by
the source's; nothing else in DEST is touched.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil

RUN_FILES = ("summary.json", "config.json", "operative_config.gin",
             "eval/history.jsonl")


def archive(source: pathlib.Path, destination: pathlib.Path) -> int:
  """Copies the record; returns how many finished runs it holds."""
  config = source / "comparison.json"
  if not config.is_file():
    raise SystemExit(f"{source} holds no comparison.json: not the "
                     "--output_dir of lerl-compare")
  destination.mkdir(parents=True, exist_ok=True)
  shutil.copyfile(config, destination / "comparison.json")
  finished = sorted(path.parent for path in
                    (source / "runs").rglob("summary.json"))
  for run in finished:
    target = destination / run.relative_to(source)
    for name in RUN_FILES:
      if (run / name).is_file():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / name, target / name)
  return len(finished)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("source", type=pathlib.Path,
                      help="the comparison's --output_dir")
  parser.add_argument("destination", type=pathlib.Path)
  arguments = parser.parse_args()
  count = archive(arguments.source, arguments.destination)
  print(f"{arguments.destination}: {count} finished runs")


if __name__ == "__main__":
  main()
