"""lerl-recsim: LERL for RecSim NG and TF-Agents.

An LLM plans which content categories a user should see next; an RL agent
picks the items inside them; both aim at long-term user satisfaction.
"""

import os as _os
import re as _re
import sys as _sys
from importlib import metadata as _metadata

# What this package runs on; each entry: (distribution, lowest, below, fix).
# tf-agents is installed without its own pins (they would downgrade
# typing-extensions under LangChain and pydantic): see BUILD_NOTES.md.
_REQUIREMENTS = (
    ("tensorflow", (2, 21), (2, 22),
     "install tensorflow==2.21.0 (TF-Agents 0.19 and RecSim NG run on it)"),
    ("tf-agents", (0, 19), (0, 20),
     "install it without its pins: pip install --no-deps tf-agents==0.19.0"),
    ("typing-extensions", (4, 14), None,
     "pip install 'typing-extensions>=4.14' (tf-agents' own pin, 4.5.0, "
     "breaks pydantic and LangChain)"),
    ("wrapt", (2, 2), None,
     "pip install 'wrapt>=2.2' (older wrapt fails on dict observations "
     "inside tf.function)"),
)


def _version_tuple(version: str) -> tuple[int, ...]:
  return tuple(int(part) for part in _re.findall(r"\d+", version)[:3])


def check_environment() -> None:
  """Raises ImportError naming the fix when an installed dependency is
  missing or outside the versions this package runs on."""
  problems = []
  for name, lowest, below, fix in _REQUIREMENTS:
    try:
      version = _metadata.version(name)
    except _metadata.PackageNotFoundError:
      problems.append(f"{name} is not installed; {fix}")
      continue
    found = _version_tuple(version)
    if found < lowest or (below is not None and found >= below):
      wanted = (f">= {'.'.join(map(str, lowest))}" +
                (f", < {'.'.join(map(str, below))}" if below else ""))
      problems.append(f"{name} {version} is installed, {wanted} is needed; "
                      f"{fix}")
  if problems:
    raise ImportError("lerl_recsim cannot run in this environment: " +
                      "; ".join(problems) + ". The repository's "
                      "BUILD_NOTES.md lists a working set and how to "
                      "install it.")


check_environment()

# TF-Agents and RecSim NG need Keras 2; this must happen before TensorFlow
# first resolves `tf.keras`, so the package does it for its users.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if ("tensorflow" in _sys.modules and
    not _sys.modules["tensorflow"].keras.__name__.startswith("tf_keras")):
  raise ImportError(
      "Keras 3 was loaded before lerl_recsim (something used tf.keras, e.g. "
      "importing tf_agents, before `import lerl_recsim`); TF-Agents and "
      "RecSim NG need Keras 2. Import lerl_recsim first, or set "
      "TF_USE_LEGACY_KERAS=1 in the environment.")

__version__ = "0.1.0"

_LAZY = {
    "make_env": "lerl_recsim.environment",
    "splitter": "lerl_recsim.environment",
    "scenario_names": "lerl_recsim.environment",
    "make_planned_env": "lerl_recsim.planner_environment",
}


def __getattr__(name: str):
  # Lazy so that `import lerl_recsim` (for example to use the planner alone)
  # does not pay for importing TensorFlow.
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'lerl_recsim' has no attribute {name!r}")


__all__ = ["make_env", "make_planned_env", "splitter", "scenario_names",
           "__version__"]
