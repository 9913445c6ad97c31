"""Validated parameter records for scenario components.

Every tunable number of a scenario lives in a frozen dataclass deriving from
`Params`, which checks types and ranges on construction so that a bad
override fails with a message naming the field, the value and what was
expected.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Mapping, TypeVar

P = TypeVar("P", bound="Params")


@dataclasses.dataclass(frozen=True)
class Params:
  """Base class: subclasses declare fields and `_RANGES` {field: (lo, hi)}."""

  _RANGES: ClassVar[Mapping[str, tuple[float | None, float | None]]] = {}

  def __post_init__(self) -> None:
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      check_field(type(self).__name__, field, value,
                  self._RANGES.get(field.name, (None, None)))
      if field.type in ("float", float) and isinstance(value, int):
        # Ints are accepted where a number is expected; TensorFlow is not
        # as lenient, so store them as floats.
        object.__setattr__(self, field.name, float(value))

  @classmethod
  def from_dict(cls: type[P], values: Mapping[str, Any] | None) -> P:
    """Builds from a mapping, rejecting unknown names."""
    values = dict(values or {})
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(
          f"unknown {cls.__name__} parameter(s) {unknown}; accepted: "
          f"{sorted(known)}")
    return cls(**values)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def check_field(owner: str, field: dataclasses.Field, value: Any,
                bounds: tuple[float | None, float | None]) -> None:
  """Raises a descriptive error if `value` does not fit `field`."""
  expected = field.type if isinstance(field.type, str) else field.type.__name__
  check_value(f"{owner}.{field.name}", expected, value, bounds)


def check_value(name: str, expected: str, value: Any,
                bounds: tuple[float | None, float | None] = (None, None)
                ) -> None:
  """Raises a descriptive error if `value` does not fit the annotation
  `expected` ("int", "float", "str", "Sequence[int]"; others are not
  checked) and `bounds`; also checks gin-bound hyper-parameters."""
  if expected == "int":
    if isinstance(value, bool) or not isinstance(value, int):
      raise TypeError(f"{name} must be an int, got {value!r}")
  elif expected == "float":
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
      raise ValueError(f"{name} must be finite, got {value!r}")
  elif expected == "str":
    if not isinstance(value, str):
      raise TypeError(f"{name} must be a string, got {value!r}")
  elif expected == "Sequence[int]":
    if not isinstance(value, (list, tuple)) or any(
        isinstance(v, bool) or not isinstance(v, int) for v in value):
      raise TypeError(f"{name} must be a list of ints, got {value!r}")
  lo, hi = bounds
  if lo is not None and value < lo or hi is not None and value > hi:
    interval = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    raise ValueError(f"{name}={value!r} is out of range; expected {interval}")
