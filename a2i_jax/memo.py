"""A process-wide cache of built values, bounded and safe across threads (`BoundedCache`).

For what is costly to build and depends only on a hashable key: the trace of a model's
`init` (`models.init_variables`), its variables' shapes (`models.abstract_variables`) and the
jitted programs of a TrainedModel (`inference.restore.shared_programs`), docs/design.md §3.14.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Hashable


class BoundedCache:
  """The `kept` most recently used values, by key.

  `build` runs outside the lock (a trace or a compile may take seconds and start threads of
  its own); where two threads build one key at once, both get the value stored first.

  Args:
    kept: how many values to keep (at least 1); the least recently used goes first.
  """

  def __init__(self, kept: int):
    self._kept = max(1, int(kept))
    self._values: "collections.OrderedDict[Hashable, Any]" = collections.OrderedDict()
    self._lock = threading.Lock()

  def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
    """The value kept for `key`, else `build()`, kept.

    Args:
      key: a hashable key.
      build: makes the value; called only where none is kept.
    Returns:
      The value.
    Raises:
      TypeError: `key` does not hash.
    """
    with self._lock:
      if key in self._values:
        self._values.move_to_end(key)
        return self._values[key]
    value = build()
    with self._lock:
      value = self._values.setdefault(key, value)
      self._values.move_to_end(key)
      while len(self._values) > self._kept:
        self._values.popitem(last=False)
    return value

  def clear(self) -> None:
    """Forgets every value."""
    with self._lock:
      self._values.clear()
