"""Parsing helpers shared by the absl binaries."""

from __future__ import annotations

import json
from typing import Any, Mapping

from absl import app

HEADLINE_METRICS = ("cumulative_reward", "interaction_length", "step_reward",
                    "num_sessions")


def json_object(name: str, text: str | None) -> dict[str, Any]:
  """The value of a JSON-object flag (empty if unset); a usage error names
  the flag otherwise."""
  if text is None:
    return {}
  try:
    value = json.loads(text)
  except json.JSONDecodeError as error:
    raise app.UsageError(f"--{name} is not valid JSON ({error}): {text!r}")
  if not isinstance(value, dict):
    raise app.UsageError(f"--{name} must be a JSON object, got {text!r}")
  return value


def headline(summary: Mapping[str, Any]) -> str:
  """The metrics a binary prints when it finishes."""
  return json.dumps({name: summary[name] for name in HEADLINE_METRICS},
                    indent=2)
