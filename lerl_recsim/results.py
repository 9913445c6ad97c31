"""Saving results beside their resolved configuration, without clobbering.

A results directory holds `config.json`; writing into a directory whose
saved configuration differs is refused, so a new run never overwrites or
mixes with the results of another.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any, Mapping


class ConfigMismatchError(ValueError):
  """The directory holds a run with a different configuration."""


def normalised_config(config: Mapping[str, Any]) -> Any:
  """`config` as its saved JSON reads back (what saved configs compare to)."""
  return json.loads(json.dumps(config, sort_keys=True, default=str))


def differences(saved: Any, new: Any, prefix: str = "") -> list[str]:
  """`KEY.PATH: SAVED -> NEW` for each value that differs, nested mappings
  followed down to the values."""
  if isinstance(saved, dict) and isinstance(new, dict):
    return [line for key in sorted(set(saved) | set(new))
            for line in differences(saved.get(key), new.get(key),
                                    f"{prefix}{key}.")]
  if saved == new:
    return []
  return [f"{prefix[:-1]}: {json.dumps(saved)} -> {json.dumps(new)}"]


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
  """Writes JSON via a temporary file and a rename: never half-written."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  with os.fdopen(handle, "w") as stream:
    json.dump(payload, stream, indent=2, sort_keys=True, default=str)
    stream.write("\n")
  os.replace(temporary, path)


def claim_directory(root_dir: str | os.PathLike, config: Mapping[str, Any],
                    config_name: str = "config.json") -> pathlib.Path:
  """Creates `root_dir` for `config`, or checks it already belongs to it.

  The configuration is saved as `config_name` in `root_dir`.
  """
  root = pathlib.Path(root_dir)
  config_path = root / config_name
  if config_path.exists():
    try:
      saved = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
      raise ConfigMismatchError(
          f"{config_path} is not valid JSON ({error}); refusing to write "
          "into a directory whose run cannot be identified") from None
    normalised = normalised_config(config)
    if saved != normalised:
      changed = sorted(key for key in set(saved) | set(normalised)
                       if saved.get(key) != normalised.get(key))
      raise ConfigMismatchError(
          f"{root} holds a run with a different configuration (differs in "
          f"{changed}): {config_path} has "
          f"{'; '.join(differences(saved, normalised))} (saved -> now); "
          "choose another directory or remove that run")
  else:
    write_json_atomic(config_path, normalised_config(config))
  return root
