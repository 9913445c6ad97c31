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


class DamagedFileError(ValueError):
  """A saved file cannot be read back (truncated or corrupt); nothing was
  overwritten."""

  def __init__(self, path: str | os.PathLike, problem: str, remedy: str):
    super().__init__(f"{os.fspath(path)} is damaged ({problem}); {remedy}")
    self.path = pathlib.Path(path)


def read_json(path: str | os.PathLike, remedy: str) -> Any:
  """The JSON in `path`; DamagedFileError (saying `remedy`) if unreadable."""
  try:
    return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise DamagedFileError(path, str(error).splitlines()[0], remedy) from None


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
  """Writes JSON via a temporary file and a rename: never half-written.

  If writing fails (a full disk), the temporary file is removed, the
  previous `path` stays as it was, and the OSError says so.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  text = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
  handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  try:
    with os.fdopen(handle, "w") as stream:
      stream.write(text)
      stream.flush()
      os.fsync(stream.fileno())
    os.replace(temporary, path)
  except BaseException as error:  # a full disk, or an interrupt
    os.unlink(temporary)
    if not isinstance(error, OSError):
      raise
    raise OSError(error.errno, f"could not write {path} ({error.strerror}); "
                  "the previous version, if any, is intact") from None


def claim_directory(root_dir: str | os.PathLike, config: Mapping[str, Any],
                    config_name: str = "config.json") -> pathlib.Path:
  """Creates `root_dir` for `config`, or checks it already belongs to it.

  The configuration is saved as `config_name` in `root_dir`.
  """
  root = pathlib.Path(root_dir)
  config_path = root / config_name
  if config_path.exists():
    saved = read_json(config_path, (
        f"it identifies the run in {root}, so nothing is written there: "
        "remove that directory to start the run over, or choose another"))
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
