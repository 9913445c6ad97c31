"""lerl-recsim: LERL for RecSim NG and TF-Agents.

An LLM plans which content categories a user should see next; an RL agent
picks the items inside them; both aim at long-term user satisfaction.
"""

import os as _os
import sys as _sys

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
