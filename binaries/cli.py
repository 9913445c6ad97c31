"""What every lerl binary shares: a quiet start, help that lists the
binary's own flags, and bad input reported in one line.

Import this module before anything that imports TensorFlow: importing it
loads TensorFlow and gym with their start-up notices (oneDNN, CUDA, gym's
"unmaintained" banner) silenced, unless the command line passes
--verbosity. Then `run(main, __name__)` replaces `app.run(main)`:

- `--help` (`-h`, `--helpshort`) prints the binary's docstring and its own
  flags, `--helpfull` every flag; both exit 0. absl lists only the main
  module's flags, and a console script's main module defines none.
- A bad flag value, or a ValueError, FileNotFoundError or ImportError from
  the configuration, ends the run with one line naming it and exit status
  2; an OSError or RuntimeError while running, with status 1. `--traceback`
  shows the Python traceback instead.
- Without --verbosity, log lines come only from this project (progress and
  results), and from its libraries only errors: their INFO lines, warnings
  and Python warnings are off.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import pathlib
import sys
import warnings
from typing import Callable, Iterator, Sequence

from absl import app, flags, logging

# Their folders, below (the package modules import nothing heavy).
import lerl_recsim.agents  # noqa: F401
import lerl_recsim.experiments  # noqa: F401
import lerl_recsim.scenarios  # noqa: F401

FLAGS = flags.FLAGS
flags.DEFINE_bool("traceback", False, "On an error, show the Python "
                  "traceback instead of a one-line message.")

SHORT_HELP = ("--help", "-h", "-?", "--helpshort")
FULL_HELP = ("--helpfull",)
USAGE_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError,
                ImportError, app.UsageError)
RUNTIME_ERRORS = (OSError, RuntimeError)
USAGE_STATUS, RUNTIME_STATUS = 2, 1
NOISY_LIBRARIES = r"(tensorflow|tf_agents|tf_keras|tensorflow_probability|gym|recsim_ng)\b"
# The folders whose log lines a quiet run shows: this project's packages,
# wherever they are installed (a checkout installed in editable mode keeps
# them side by side, a wheel nests them in lerl_recsim/).
PROJECT_DIRS = tuple(
    str(pathlib.Path(sys.modules[name].__file__).resolve().parent) + os.sep
    for name in ("lerl_recsim", "lerl_recsim.agents", "lerl_recsim.experiments",
                 "lerl_recsim.binaries", "lerl_recsim.scenarios"))


def verbosity_requested(argv: Sequence[str]) -> bool:
  return any(arg.split("=")[0] in ("--verbosity", "-v", "--v")
             for arg in argv[1:])


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
  """Sends file descriptor 2 to /dev/null: TensorFlow's C++ start-up
  notices bypass Python's sys.stderr and TF_CPP_MIN_LOG_LEVEL."""
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


def _quiet_start() -> None:
  # Later C++ notices (e.g. oneDNN falling back to Eigen) honour this.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  warnings.filterwarnings("ignore", module=NOISY_LIBRARIES)
  # AutoGraph's generated code compares with `is ()`; Python flags it when
  # compiling the file, whose module is a temporary name.
  warnings.filterwarnings("ignore", category=SyntaxWarning)
  with stderr_silenced():
    import gym  # noqa: F401  (its banner)
    import tensorflow as tf
    tf.config.list_physical_devices()  # device discovery's notices
  tf.get_logger().setLevel(std_logging.ERROR)


if not verbosity_requested(sys.argv):
  _quiet_start()


def program_name() -> str:
  return pathlib.Path(sys.argv[0]).name


class _ProjectLinesOnly(std_logging.Filter):
  """Lines from this project's files; from others, errors only."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return (record.levelno >= std_logging.ERROR or
            record.pathname.startswith(PROJECT_DIRS))


def _configure_logging() -> None:
  if FLAGS["verbosity"].present:
    return
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_ProjectLinesOnly())


def _fail(error: BaseException, status: int) -> None:
  if FLAGS.is_parsed() and FLAGS.traceback:
    raise error
  message = " ".join(str(error).split()) or type(error).__name__
  print(f"{program_name()}: error: {message}", file=sys.stderr)
  sys.exit(status)


def _parse(argv: list[str]) -> list[str]:
  """absl's parsing, with help that exits 0 and one-line flag errors."""
  options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  if any(arg in FULL_HELP for arg in options):
    print(FLAGS.get_help())
    sys.exit(0)
  if any(arg in SHORT_HELP for arg in options):
    doc = (sys.modules["__main__"].__doc__ or "").strip()
    flags_text = FLAGS.module_help(argv[0]).replace(argv[0], program_name(), 1)
    print(f"{doc}\n\nFlags:\n{flags_text}\n\n"
          "Try --helpfull for every flag, TensorFlow's and absl's included.")
    sys.exit(0)
  try:
    return FLAGS(argv)
  except flags.Error as error:
    _fail(error, USAGE_STATUS)
    raise  # not reached


def run(main: Callable[[list[str]], None], module_name: str) -> None:
  """`app.run(main)` for the binary defined in module `module_name`."""
  module = sys.modules[module_name]
  binary = sys.argv[0]
  for name in (module_name, __name__):
    for flag in FLAGS.get_key_flags_for_module(name):
      FLAGS.register_key_flag_for_module(binary, flag)
  if not (sys.modules["__main__"].__doc__ or "").strip():
    sys.modules["__main__"].__doc__ = module.__doc__

  def guarded(argv: list[str]) -> None:
    _configure_logging()
    try:
      main(argv)
    except USAGE_ERRORS as error:
      _fail(error, USAGE_STATUS)
    except RUNTIME_ERRORS as error:
      _fail(error, RUNTIME_STATUS)

  app.run(guarded, flags_parser=_parse)
