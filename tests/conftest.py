"""Shared test setup: the package first (Keras 2), quiet TensorFlow, and
constants several test modules share (`from tests.conftest import ...`)."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import lerl_recsim  # noqa: E402,F401  (before any test module imports tf_agents)
from lerl_recsim.planner import PlanRules  # noqa: E402

# Plans of 2-4 categories, the rules before plans grew to 7-9: tests whose
# point is a mechanism (validation, caching, fallback, background answers,
# reflections) keep hand-written fake replies of a few categories readable by
# giving the planner these rules explicitly. Tests of the product defaults
# use PlanRules().
SMALL_PLANS = PlanRules(min_categories=2, max_categories=4)

# The checkout's root (configs/, requirements/ and ../shared/ are read from
# it); tests sit in folders that mirror the code's.
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
