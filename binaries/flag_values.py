"""Parsing helpers shared by the absl binaries."""

from __future__ import annotations

import json
from typing import Any, Mapping

HEADLINE_METRICS = ("cumulative_reward", "interaction_length", "step_reward",
                    "num_sessions")


def headline(summary: Mapping[str, Any]) -> str:
  """The metrics a binary prints when it finishes."""
  return json.dumps({name: summary[name] for name in HEADLINE_METRICS},
                    indent=2)
