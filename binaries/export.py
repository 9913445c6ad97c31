r"""Writes the serving bundle of a trained run.

  lerl-export --root_dir=runs/lerl --export_dir=bundles/lerl
  python -m lerl_recsim.binaries.export --root_dir=runs/lerl \
      --export_dir=bundles/lerl

The bundle holds `policy/` (the run's greedy policy SavedModel; the mask is
one of its inputs), `planner_spec.json` (planner backend, rules, prompt
template and settings, catalogue, replan interval, and the scenario facts
that shape observations and masks) and, for LLM planners, the run's
`reflections.json`. Load it with
`lerl_recsim.serving.HierarchicalRecommender.load(EXPORT_DIR)`. An existing
non-empty --export_dir is refused; the bundle appears there whole or not at
all.
"""

from __future__ import annotations

from typing import Sequence

from absl import flags, logging

from lerl_recsim.binaries import cli  # first: a quiet start
from lerl_recsim.experiments import export

FLAGS = flags.FLAGS
flags.DEFINE_string("root_dir", None, "Directory of a finished training run.",
                    required=True)
flags.DEFINE_string("export_dir", None,
                    "Where to write the bundle; must not exist or be empty.",
                    required=True)


def main(argv: Sequence[str]) -> None:
  del argv
  path = export.export_bundle(FLAGS.root_dir, FLAGS.export_dir)
  logging.info("wrote the serving bundle of %s to %s", FLAGS.root_dir, path)
  print(path)


def run() -> None:
  """Console-script entry point (`lerl-export`)."""
  cli.run(main, __name__)


if __name__ == "__main__":
  run()
