r"""Sanity table: scripted policies on a scenario under each exit rule.

Shows whether a scenario rewards what it should before any agent is trained:
random, best_category (filter bubble), diversifying and oracle policies, each on
fresh users, one session per user, for every exit rule.

  python -m lerl_recsim.binaries.sanity --root_dir=runs/sanity

Writes `config.json`, `sanity.json` and `sanity.md` under --root_dir.
"""

from __future__ import annotations

from typing import Sequence

from absl import flags

from lerl_recsim.binaries import cli  # first: a quiet start
from lerl_recsim.experiments import sanity

FLAGS = flags.FLAGS
flags.DEFINE_string("root_dir", None, "Where to write the table.", required=True)
flags.DEFINE_string("scenario", "interest_evolution", "Scenario name.")
flags.DEFINE_integer("num_sessions", 512, "Sessions per policy and rule.")
flags.DEFINE_integer("seed", 0, "Seed of scenario and policies.")


def main(argv: Sequence[str]) -> None:
  del argv
  outcome = sanity.run_sanity_table(FLAGS.root_dir, FLAGS.scenario,
                                    FLAGS.num_sessions, FLAGS.seed)
  print(outcome["markdown"])


if __name__ == "__main__":
  cli.run(main, __name__)
