"""The planner's LLM cache, with hit counts.

LangChain looks every chat request up in the model's cache first; counting
those lookups tells how many requests really reached the model.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache, InMemoryCache

from lerl_recsim import results


def make_cache(cache: BaseCache | None = None,
               path: str | None = None) -> BaseCache:
  """`cache` if given; else SQLite at `path` (kept across runs); else memory."""
  if cache is not None and path is not None:
    raise ValueError(
        f"give either a cache or a cache path, not both (path={path!r})")
  if cache is not None:
    return cache
  if path is None:
    return InMemoryCache()
  try:
    from langchain_community.cache import SQLiteCache
  except ImportError:
    raise ImportError(
        f"a cache path ({path!r}) needs langchain-community's SQLiteCache; "
        "install it with: pip install 'lerl-recsim[sqlite]'") from None
  check_sqlite_cache(path)
  return SQLiteCache(database_path=path)


def check_sqlite_cache(path: str) -> None:
  """DamagedFileError if the SQLite file at `path` exists and is unreadable:
  LangChain would otherwise fail inside every request, each counted as a
  fallback, and the run would go on without its LLM."""
  if not os.path.exists(path):
    return
  try:
    with contextlib.closing(sqlite3.connect(path)) as connection:
      connection.execute("PRAGMA quick_check").fetchall()
      connection.execute("SELECT name FROM sqlite_master").fetchall()
  except sqlite3.DatabaseError as error:
    raise results.DamagedFileError(
        path, f"not a readable SQLite database: {error}",
        "remove it (the answers it held will be asked again) or choose "
        "another cache file") from None


class CountingCache(BaseCache):
  """Wraps a cache and counts hits and misses (thread-safe)."""

  def __init__(self, inner: BaseCache) -> None:
    self.inner = inner
    self.hits = 0
    self.misses = 0
    self._lock = threading.Lock()

  def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
    value = self.inner.lookup(prompt, llm_string)
    with self._lock:
      if value is None:
        self.misses += 1
      else:
        self.hits += 1
    return value

  def update(self, prompt: str, llm_string: str,
             return_val: RETURN_VAL_TYPE) -> None:
    self.inner.update(prompt, llm_string, return_val)

  def clear(self, **kwargs: Any) -> None:
    self.inner.clear(**kwargs)
