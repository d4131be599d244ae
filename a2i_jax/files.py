"""File helpers: the one atomic write, and the persistent compilation cache.

Everything the project writes for a user (configs, PNGs, JSON reports, caches) goes through
`atomic_write` or `atomic_path`: the bytes land in a temporary file beside the target and are
renamed over it when complete, so a crash or a full disk never leaves a half-written file that
looks finished.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator, Optional, Union

import jax


@contextlib.contextmanager
def atomic_path(path: str, suffix: Optional[str] = None) -> Iterator[str]:
  """A temporary path to write to; renamed to `path` when the block ends without error.

  For writers that take a file name (PIL's `save`, `np.save`). The directory is created. On
  an exception the temporary file is removed and `path` is left as it was.

  Args:
    path: the final file.
    suffix: the temporary file's suffix (default: `path`'s own, so format detection works).
  Yields:
    The temporary file's path, in `path`'s directory.
  """
  path = os.path.abspath(os.path.expanduser(path))
  directory = os.path.dirname(path)
  os.makedirs(directory, exist_ok=True)
  if suffix is None:
    suffix = os.path.splitext(path)[1]
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}",
                             dir=directory)
  os.close(fd)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def atomic_write(path: str, data: Union[str, bytes]) -> None:
  """Writes `data` to `path` atomically (text as UTF-8).

  Args:
    path: the file to write; its directory is created.
    data: the whole content.
  """
  if isinstance(data, str):
    data = data.encode("utf-8")
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())


def enable_compilation_cache(directory: str) -> None:
  """Turns on JAX's persistent compilation cache in `directory` ("" leaves it off).

  Called by the entry points (train.py, infer.py) and notebooks, not by the library: where
  compiled programs are cached is the caller's choice.

  Args:
    directory: the cache directory (`~` is expanded); "" for none.
  """
  if directory:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
