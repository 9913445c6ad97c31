"""Shared test setup: the package first (Keras 2), quiet TensorFlow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import lerl_recsim  # noqa: E402,F401  (before any test module imports tf_agents)
