"""Turning a model's reply into a plan: parsing, then rules checked in code.

Even schema-constrained output is only trusted after these checks: a weak or
remote model may repeat names, invent names, or ignore the schema entirely.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from lerl_recsim.planner.history import UserHistory
from lerl_recsim.scenarios.catalogue import Catalogue


class PlanParseError(ValueError):
  """The reply could not be read as a list of category names."""


class InvalidPlan(ValueError):
  """The reply was read, but the plan breaks a rule (unknown, empty, size)."""


@dataclasses.dataclass(frozen=True)
class PlanRules:
  """What a valid plan looks like.

  Attributes:
    min_categories: Fewest distinct categories a plan may hold.
    max_categories: Most distinct categories a plan may hold.
    saturation_window: A category is saturated for a user when it was shown
      at every one of the user's last `saturation_window` steps.
    exclude_saturated: Drop saturated categories from every plan (a hard rule;
      a plan left too small by it is invalid).
    max_output_chars: Longer replies are rejected unread; a plan is short.
  """

  # Plans of up to 9 of the 20 categories, renewed every step, cost the
  # scripted policies at most 4.6% on development seeds 100-102, 8 up to
  # 5.6% and 4 up to 8.5% (docs/results/development.md, plan handicap).
  min_categories: int = 7
  max_categories: int = 9
  saturation_window: int = 3
  exclude_saturated: bool = True
  max_output_chars: int = 2000

  def __post_init__(self) -> None:
    if not 1 <= self.min_categories <= self.max_categories:
      raise ValueError(
          f"need 1 <= min_categories <= max_categories, got "
          f"min_categories={self.min_categories}, "
          f"max_categories={self.max_categories}")
    if self.saturation_window < 1:
      raise ValueError(
          f"saturation_window must be >= 1, got {self.saturation_window}")
    if self.max_output_chars < 16:
      raise ValueError(
          f"max_output_chars must be >= 16, got {self.max_output_chars}")

  def check_catalogue(self, catalogue: Catalogue) -> None:
    """Fails early when no plan could ever be valid for `catalogue`."""
    if self.max_categories > catalogue.num_categories:
      raise ValueError(
          f"max_categories={self.max_categories} exceeds the catalogue's "
          f"{catalogue.num_categories} categories")


def saturated(history: UserHistory, rules: PlanRules) -> frozenset[int]:
  """Categories shown at each of the user's last `saturation_window` steps."""
  recent = history.recent(rules.saturation_window)
  if len(recent) < rules.saturation_window:
    return frozenset()
  common = set(recent[0].categories)
  for step in recent[1:]:
    common &= set(step.categories)
  return frozenset(common)


def reply_text(content: Any) -> str:
  """The text of a chat reply whose content is a string or a list of blocks."""
  if isinstance(content, str):
    return content
  if isinstance(content, list):
    parts = []
    for block in content:
      if isinstance(block, str):
        parts.append(block)
      elif isinstance(block, dict) and block.get("type") == "text":
        parts.append(str(block.get("text", "")))
    return "".join(parts)
  raise PlanParseError(f"reply content of type {type(content).__name__}; "
                       "expected a string or a list of content blocks")


def parse_plan_output(content: Any, max_chars: int) -> list[Any]:
  """Reads `{"categories": [...]}` (or a bare JSON list) from a reply.

  Text around the JSON (a code fence, a preamble) is tolerated because
  backends without schema support add it; the items are checked later.
  """
  text = reply_text(content).strip()
  if not text:
    raise PlanParseError("empty reply; expected a JSON object with 'categories'")
  if len(text) > max_chars:
    raise PlanParseError(
        f"reply has {len(text)} characters; the limit is {max_chars}")
  starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
  if not starts:
    raise PlanParseError(f"no JSON in reply {text[:80]!r}")
  try:
    value, _ = json.JSONDecoder().raw_decode(text, min(starts))
  except json.JSONDecodeError as e:
    raise PlanParseError(f"malformed JSON in reply {text[:80]!r}: {e}") from None
  if isinstance(value, dict):
    value = value.get("categories")
  if not isinstance(value, list):
    raise PlanParseError(
        f"reply {text[:80]!r} holds no list of categories; expected "
        "{\"categories\": [names]}")
  return value


def validate_plan(items: Sequence[Any], catalogue: Catalogue,
                  history: UserHistory, rules: PlanRules,
                  choices: Sequence[int] | None = None) -> tuple[int, ...]:
  """Category ids for the named items, or InvalidPlan saying what is wrong.

  Names match the catalogue ignoring case and surrounding spaces; a name
  off the `choices` (the prompt's shortlist; None: any category) is invalid;
  repeats are dropped (first mention kept); saturated categories are dropped
  when the rules say so; the remaining count must lie in [min, max].
  """
  lookup = {name.casefold(): i for i, name in enumerate(catalogue.category_names)}
  plan: list[int] = []
  for item in items:
    key = item.strip().casefold() if isinstance(item, str) else None
    if key not in lookup:
      raise InvalidPlan(
          f"unknown category {str(item)[:60]!r}; expected one of "
          f"{', '.join(catalogue.category_names)}")
    if choices is not None and lookup[key] not in choices:
      raise InvalidPlan(
          f"category {item!r} is not on the shortlist; expected one of "
          f"{', '.join(catalogue.category_names[c] for c in choices)}")
    if lookup[key] not in plan:
      plan.append(lookup[key])
  if rules.exclude_saturated:
    blocked = saturated(history, rules)
    plan = [c for c in plan if c not in blocked]
  if not rules.min_categories <= len(plan) <= rules.max_categories:
    raise InvalidPlan(
        f"plan has {len(plan)} usable categories "
        f"{[catalogue.category_names[c] for c in plan]}; expected between "
        f"{rules.min_categories} and {rules.max_categories}")
  return tuple(plan)
