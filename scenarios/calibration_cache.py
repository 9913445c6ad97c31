"""An on-disk cache of calibrations, keyed by the data and the parameters.

A fit takes seconds; building an environment should not. Entries are `.npz`
files named by a hash of the data files' bytes and every parameter that
changes the fit, written to a temporary file and renamed, so a reader never
sees a half-written entry, and a failed fit leaves nothing behind. An entry that cannot be read is
reported, not replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np

from lerl_recsim import results

CACHE_DIR_VARIABLE = "LERL_CACHE_DIR"


def cache_dir(explicit: str | os.PathLike | None = None) -> pathlib.Path:
  """`explicit`, else $LERL_CACHE_DIR, else ~/.cache/lerl_recsim."""
  chosen = explicit or os.environ.get(CACHE_DIR_VARIABLE)
  if chosen:
    return pathlib.Path(chosen).expanduser()
  return pathlib.Path.home() / ".cache" / "lerl_recsim"


def file_sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as stream:
    for block in iter(lambda: stream.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def entry_key(file_digests: Sequence[str], parameters: Mapping[str, Any]) -> str:
  """A hash of the data files' digests and the fit's parameters."""
  payload = json.dumps({"data": list(file_digests), "parameters": parameters},
                       sort_keys=True, default=str)
  return hashlib.sha256(payload.encode()).hexdigest()


def load(path: pathlib.Path) -> dict[str, np.ndarray] | None:
  """The arrays of an entry, None if absent; DamagedFileError if it cannot
  be read (it is left as it is: a cache entry is never silently replaced)."""
  if not path.exists():
    return None
  try:
    with np.load(path, allow_pickle=False) as entry:
      return {name: entry[name] for name in entry.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
    raise results.DamagedFileError(
        path, f"unreadable calibration: {error}",
        "remove it to fit the calibration again") from None


def save_atomic(path: pathlib.Path, arrays: Mapping[str, np.ndarray]) -> None:
  """Writes an entry via a temporary file and a rename."""
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                       suffix=".tmp")
  try:
    with os.fdopen(handle, "wb") as stream:
      np.savez(stream, **arrays)
    os.replace(temporary, path)
  except BaseException:
    os.unlink(temporary)
    raise
