r"""The main job: LERL against the flat DQN baseline, side by side.

Trains `lerl` (LLM planner, embedded SmolLM2 by default, + masked double
DQN) and `dqn` (no planner) on the default `interest_evolution` scenario,
each until its learning curve levels off (`learning_curves.PlateauRule`,
checked on the same fresh evaluation users every 1,000 iterations; at most
the DQN family's convergence budget), and prints a table of long-term
satisfaction with each agent's learning curve.

  python -m lerl_recsim.binaries.quickstart --root_dir=runs/main

Each agent's run lives in ROOT_DIR/<agent> (an ordinary lerl-train run,
planning in the background: training never waits for the LLM, and the
table says what share of training plans the LLM made);
the planner's LLM answers are cached in ROOT_DIR/planner_cache.sqlite so a
second run reuses them. The table is also written to ROOT_DIR/table.md.
"""

from __future__ import annotations

from typing import Sequence

from absl import flags

from lerl_recsim.binaries import cli  # first: a quiet start
from lerl_recsim.binaries import run_flags
from lerl_recsim.experiments import quickstart

FLAGS = flags.FLAGS
flags.DEFINE_string("root_dir", "runs/main", "Where the two runs are written.")
flags.DEFINE_integer("num_iterations", quickstart.MAX_ITERATIONS,
                     "Most training iterations per agent; each stops earlier "
                     "once its learning curve has levelled off.")
run_flags.define(("planner", "num_users", "num_eval_sessions", "seed"))
flags.adopt_module_key_flags(run_flags)


def main(argv: Sequence[str]) -> None:
  del argv
  outcome = quickstart.compare_lerl_and_dqn(
      FLAGS.root_dir, FLAGS.planner, FLAGS.num_iterations, FLAGS.num_users,
      FLAGS.num_eval_sessions, FLAGS.seed)
  print(outcome["table"])


if __name__ == "__main__":
  cli.run(main, __name__)
