"""File helpers: the one atomic write, the workdir lock and its checks, and the persistent
compilation cache.

Everything the project writes for a user (configs, PNGs, JSON reports, caches) goes through
`atomic_write` or `atomic_path`: the bytes land in a temporary file beside the target and are
renamed over it when complete, so a crash or a full disk never leaves a half-written file that
looks finished.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import socket
import stat
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import jax
import numpy as np
from absl import logging

from a2i_jax.errors import ConfigError, WorkdirError, causes

LOCK_FILE = ".lock"
# The longest file name, in bytes, that the common file systems take (ext4, XFS, Btrfs, APFS,
# tmpfs): names the library makes from a user's (a folder's, an attribute's) are cut to fit.
NAME_MAX = 255
# What `atomic_path`'s temporary file adds to a name, besides repeating its suffix:
# ".NAME.XXXXXXXX.tmp.png" for NAME.png (tempfile's 8 random characters).
ATOMIC_NAME_EXTRA = len("..XXXXXXXX.tmp")
# Read once, at import (single-threaded then): reading it means setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
# Errors that say where the workdir is, not what the program did wrong: {errno: (what it
# says, what to do about it: `storage_fix`)}. EIO and EFBIG were tracebacks (from the training
# loop's save, metrics row or sample grid, and before it); the advice was "free some space (or
# fix the permissions)" for every one, also a failed disk and a read-only file system.
_STORAGE_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", "free some space"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some of your disk quota"),
    errno.EROFS: ("the file system is read-only", "make the file system writable"),
    errno.EACCES: ("permission denied", "fix the permissions"),
    errno.EPERM: ("permission denied", "fix the permissions"),
    errno.EIO: ("an input/output error: the disk or its connection failed",
                "check the disk (the system log, dmesg, says more)"),
    errno.EFBIG: ("a file is larger than the file system or the file size limit (ulimit -f) "
                  "allows", "raise the file size limit (ulimit -f) or use a file system that "
                  "takes larger files (FAT32 stops at 4 GiB)"),
    # Were tracebacks at the first checkpoint save (tensorstore's "File name too long", "Too
    # many open files"; fault hunt). ENFILE before EMFILE: its words hold EMFILE's.
    errno.ENAMETOOLONG: ("a path is longer than the file system allows", "use a shorter path"),
    errno.ENFILE: ("too many files are open on this system",
                   "close programs that hold many files, or raise the system's limit "
                   "(sysctl fs.file-max)"),
    errno.EMFILE: ("too many files are open in this process, over its limit (ulimit -n)",
                   "raise the limit of open files (ulimit -n 4096, or more)")}
# How tensorstore (under Orbax) and the ArrayRecord writer quote an errno besides its words.
_QUOTED_ERRNO = re.compile(r"os_error_code\W{0,3}(\d+)|\[Errno (\d+)\]")
# Reading a file: the errnos that say what stands at its path (a folder, a link loop, a
# socket), the file's own damage; others are the system's (`read_digests`).
_NOT_A_FILE_ERRNOS = {errno.EISDIR, errno.ELOOP, errno.ENOTDIR, errno.ENXIO}


@contextlib.contextmanager
def atomic_path(path: str, suffix: Optional[str] = None) -> Iterator[str]:
  """A temporary path to write to; synced to the disk and renamed to `path` when the block
  ends without error.

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
  os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's file is private (0600); the target is not.
  try:
    yield tmp
    # On the disk before the name is (was: only `atomic_write` synced; a PNG renamed but not
    # written when the machine stopped was an empty file under the final name, which
    # training takes as an evaluation done).
    _fsync(tmp, os.O_RDONLY)
    os.replace(tmp, path)
    sync_folder(directory)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def sync_folder(path: str) -> None:
  """Flushes a folder's entries (the names of the files it holds) to the disk, so that a file
  just made there survives a power loss; a file system that cannot sync a folder (EINVAL)
  keeps them as it does.

  Args:
    path: the folder.
  Raises:
    OSError: it cannot be opened, or the disk failed (EIO).
  """
  _fsync(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path: str, flags: int) -> None:
  """Flushes `path` (a file or a folder) to the disk; where the file system cannot sync a
  folder (EINVAL), its entries stay as the file system keeps them."""
  fd = os.open(path, flags)
  try:
    os.fsync(fd)
  except OSError as e:
    if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
      raise
  finally:
    os.close(fd)


def strict_json(obj: Any) -> Any:
  """`obj` as strict JSON can hold it: NaN and infinities as None (null; Python's json writes
  NaN / Infinity, which other readers refuse), NumPy scalars as Python numbers, tuples as lists.

  Args:
    obj: dicts, lists, tuples, numbers (NumPy scalars included), strings, None.
  Returns:
    The same structure, ready for `json.dumps(..., allow_nan=False)`.
  """
  if isinstance(obj, (np.floating, np.integer)):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: strict_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [strict_json(v) for v in obj]
  return obj


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


def storage_error(exc: BaseException) -> Optional[OSError]:
  """The full-disk, quota, read-only, permission, failed-disk (EIO), file-too-large (EFBIG),
  path-too-long (ENAMETOOLONG) or too-many-open-files (EMFILE, ENFILE) `OSError` behind
  `exc`, if any.

  Orbax and tensorstore wrap the OSError of a failed write in their own exceptions (or only
  quote it: its words, or "[os_error_code=24]"), and the ArrayRecord writer under TFDS raises
  a RuntimeError that quotes it ("write() failed: No space left on device"), so the chain of
  causes and the messages are both searched.

  Args:
    exc: any exception.
  Returns:
    The OSError (one made from the message where only the message tells), or None.
  """
  for exc in causes(exc):
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
      return exc
    text = str(exc)
    for code, (words, _) in _STORAGE_ERRNOS.items():
      if os.strerror(code) in text or "ENOSPC" in text and code == errno.ENOSPC:
        return OSError(code, words)
    for match in _QUOTED_ERRNO.finditer(text):
      code = int(match.group(1) or match.group(2))
      if code in _STORAGE_ERRNOS:
        return OSError(code, _STORAGE_ERRNOS[code][0])
  return None


def describe_storage_error(error: OSError) -> str:
  """A few words for a storage error: "no space left on the device", "permission denied".

  Args:
    error: from `storage_error`.
  Returns:
    The words.
  """
  known = _STORAGE_ERRNOS.get(error.errno)
  return known[0] if known else error.strerror or str(error)


def storage_fix(error: Union[OSError, int]) -> str:
  """What to do about a storage error, by its errno: "free some space", "fix the permissions",
  "check the disk (the system log, dmesg, says more)".

  Args:
    error: from `storage_error`, or its errno (any other: "fix what the system names").
  Returns:
    The advice, lower case, without a final period (a sentence's start: capitalise it).
  """
  known = _STORAGE_ERRNOS.get(error if isinstance(error, int) else error.errno)
  return known[1] if known else "fix what the system names"


def file_digests(folder: str, skip: str, known: Iterable[str] = ()) -> dict[str, str]:
  """The SHA-256 of every file below `folder` but the checksum file `skip` (and its
  temporaries), for a checksum file that says what a finished folder held.

  Args:
    folder: a directory.
    skip: the checksum file's name (it and files named "." + it + "..." are left out).
    known: relative paths to leave out as well (files whose digests are known already).
  Returns:
    {path relative to `folder`, as os.path.relpath gives it: hex SHA-256}.
  """
  out, known = {}, set(known)

  def unlistable(error: OSError) -> None:  # Was skipped: its files then read as "missing".
    raise error
  for root, _, names in os.walk(folder, onerror=unlistable):
    for name in names:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, folder)
      if rel == skip or name.startswith("." + skip) or rel in known:
        continue
      out[rel] = file_sha256(path)
  return out


def file_sha256(path: str) -> str:
  """The hex SHA-256 of a file's bytes, read in 1 MiB chunks.

  Args:
    path: the file.
  Returns:
    The digest, 64 hex characters.
  Raises:
    OSError: it cannot be read.
  """
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def read_digests(path: str) -> Optional[dict[str, str]]:
  """The digests in a checksum file (`write_digests`).

  Args:
    path: the checksum file.
  Returns:
    {relative path: hex SHA-256}, or None when there is no such file.
  Raises:
    ValueError: the file is there but damaged or not a checksum file (a folder, a link loop).
    OSError: it cannot be read for a reason outside its bytes (`storage_error`: permissions,
      the disk; a network file system's passing error, too many open files).
  """
  try:
    with open(path, encoding="utf-8") as f:
      sums = json.load(f)["sha256"]
    return {str(k): str(v) for k, v in sums.items()}
  except FileNotFoundError:
    return None
  except OSError as e:
    # Only what stands at the path is damage (was: any errno but the storage ones, so a
    # network file system's ESTALE or too many open files called a checkpoint corrupt, and
    # it was set aside, or a prepared dataset copy damaged, to be deleted).
    if e.errno not in _NOT_A_FILE_ERRNOS:
      raise
    raise ValueError(f"{path} is unreadable ({type(e).__name__})") from None
  except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
    # RecursionError: JSON nested past Python's recursion limit ('[' * 200000), was a
    # traceback instead of the damage's message (review finding).
    raise ValueError(f"{path} is unreadable ({type(e).__name__})") from None


def write_digests(path: str, digests: dict[str, str]) -> None:
  """Writes a checksum file atomically (`read_digests` reads it).

  Args:
    path: the checksum file.
    digests: {relative path: hex SHA-256}.
  """
  atomic_write(path, json.dumps({"sha256": digests}, indent=0))


def compare_digests(expected: dict[str, str], actual: dict[str, str],
                    since: str) -> Optional[str]:
  """What differs between a checksum file's digests and a folder's (`file_digests`).

  Args:
    expected: the recorded digests.
    actual: the folder's digests now.
    since: the words after "changed since it was", e.g. "saved".
  Returns:
    None when every recorded file is there unchanged (files added since are not checked);
    otherwise e.g. "file default/d/3f2a changed since it was saved".
  """
  for rel, digest in sorted(expected.items()):
    if rel not in actual:
      return f"file {rel} is missing"
    if actual[rel] != digest:
      return f"file {rel} changed since it was {since}"
  return None


def unused_path(folder: str, stem: str, extension: str = "") -> str:
  """`folder/stem+extension`, or where that exists `folder/stem.2+extension`, `.3`, ...: a
  name for a copy that must not replace an earlier one (a checkpoint set aside twice, a
  config kept twice).

  Args:
    folder: where the name goes.
    stem: the name without `extension`.
    extension: e.g. ".json"; "" for a folder.
  Returns:
    A path that does not exist yet.
  """
  path, n = os.path.join(folder, stem + extension), 1
  while os.path.exists(path):
    n += 1
    path = os.path.join(folder, f"{stem}.{n}{extension}")
  return path


def is_folder(path: str) -> bool:
  """Whether `path` is a real folder, not a link to one (nor a file, nor missing).

  Args:
    path: a path.
  Returns:
    True for a folder itself; False for a link (to a folder too), a file or nothing there.
  """
  return os.path.isdir(path) and not os.path.islink(path)


def nearest_existing(path: str) -> str:
  """`path`, or the nearest of its parents that exists: where a folder at `path` would be made.

  Args:
    path: a path (a relative one is taken from the working directory).
  Returns:
    An existing path (a folder, or a file that blocks the rest of `path`).
  """
  path = os.path.abspath(path)  # Was: a relative one never reached "/", a loop without end.
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def check_output_file(path: Any, what: str, example: str, error: type[Exception]) -> str:
  """Refuses a file path to write that is no path (None, empty), is a folder or lies inside a
  file, before the work that fills it (were TypeError, IsADirectoryError and FileExistsError,
  after it; fault hunts).

  Args:
    path: the file's path (str or os.PathLike; `~` is expanded).
    what: what the file holds, for the message ("PNG", "JSON").
    example: a file name to suggest inside a folder given as `path` ("grid.png").
    error: the error class to raise (the caller's A2IError).
  Returns:
    The absolute path.
  Raises:
    error: `path` is not a str or os.PathLike or is empty, holds a character no file name
      can (a NUL, or a lone surrogate the file system's encoding cannot write), is a folder,
      or one of its parents is a file.
  """
  if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
    raise error(f"path={path!r}: pass the {what} file's path (a str or pathlib.Path).")
  # Were ValueError ("embedded null byte") and UnicodeEncodeError tracebacks, at the write,
  # after the work (fault hunt). Named by repr: printed as it is, the line itself would fail.
  try:
    nul = b"\0" in os.fsencode(path)
    why = "a NUL character (\\x00)"
  except UnicodeEncodeError as e:
    nul, why = True, f"{e.object[e.start:e.end]!r}, which the file system cannot encode"
  if nul:
    raise error(f"path={os.fspath(path)!r} holds {why}: no file can be named so; pass the "
                f"{what} file's path without it.")
  full = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(full):
    raise error(f"{os.fspath(path)} is a folder; pass a file path for the {what} (e.g. "
                f"{os.path.join(path, example)}), or move the folder away.")
  existing = nearest_existing(os.path.dirname(full))
  if not os.path.isdir(existing):
    raise error(f"{os.fspath(path)} lies inside {existing}, which is a file, not a folder; pass "
                "a path whose parents are folders.")
  return full


# The most bytes that the paths a run writes add to its workdir's. Measured on the files of a
# train.py run (the longest path below the workdir, while a save was under way): a
# checkpoint's array file, "/checkpoints/22.orbax-checkpoint-tmp/default.orbax-checkpoint-tmp/
# ocdbt.process_0/d/<32 hex digits>", 116 bytes; 127 with a 10-digit step and a 4-digit
# process number. TensorBoard's events file, "/tensorboard/events.out.tfevents.<10-digit
# time>.<host>.<7-digit pid>.<6 digits>", is 59 bytes and the host's name, 123 with the
# longest host name Linux takes (64 bytes). 160 covers both (was 200, which refused workdirs
# of 3,896 to 3,935 bytes whose runs worked; review).
RUN_PATH_ROOM = 160
# A path's limit where the system does not say (Linux's PATH_MAX, with its final NUL).
_DEFAULT_PATH_MAX = 4096

# Characters of a path under which Orbax saves checkpoints that it cannot restore: it saves
# them (its finalisation warns), and the restore finds no arrays ("NOT_FOUND: ... step/.zarray
# does not exist"); a backslash puts the arrays in another folder (review).
UNUSABLE_PATH_CHARACTERS = "[]\\"


def check_workdir_arg(workdir: Any, error: type[Exception] = WorkdirError) -> None:
  """Refuses a workdir argument that is no path, before any use of it: the one check of the
  library's functions that take a run's folder (checkpoints, metrics, the run's config, the
  attribute predictor), each raising its own documented error class.

  Args:
    workdir: a run's directory as a caller passed it.
    error: the exception class to raise (the caller's; an `A2IError` subclass).
  Raises:
    error: `workdir` is not a str or `os.PathLike` (None, a number, bytes), or is empty
      (which named the current folder without a word).
  """
  if not isinstance(workdir, (str, os.PathLike)) or not os.fspath(workdir):
    # Was: a TypeError's traceback from os.path (None, a number), and "" the current folder,
    # without a word (fault hunt).
    raise error(f"workdir={workdir!r}: pass the run's folder, a path (str or pathlib.Path) "
                "that is not empty.")


def check_workdir_path(workdir: str) -> None:
  """Raises `WorkdirError` for a --workdir that a run cannot live in, whatever is there: a
  URL (was: a local folder named "gs:" trained in, and a traceback at the first save, the
  steps lost; review), a path holding one of `UNUSABLE_PATH_CHARACTERS`, one the libraries
  under Orbax cannot write to (`is_utf8_path`), or one so long that its checkpoints' paths
  would pass the system's limit (`check_path_room`).

  Args:
    workdir: the --workdir as given.
  Raises:
    WorkdirError: a URL, a path holding one of `UNUSABLE_PATH_CHARACTERS`, one that
      cannot be written as UTF-8 (`is_utf8_path`), or one too long (`check_path_room`).
  """
  if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", workdir):
    raise WorkdirError(f"--workdir={workdir} is a URL; runs are written to a local or mounted "
                       "file system: pass a local path (for a bucket, a folder where it is "
                       "mounted, e.g. with gcsfuse).")
  absolute = os.path.abspath(os.path.expanduser(workdir))
  bad = sorted({c for c in absolute if c in UNUSABLE_PATH_CHARACTERS})
  if bad:
    raise WorkdirError(f"the workdir {absolute} holds {' and '.join(map(repr, bad))}: Orbax "
                       "saves checkpoints under such a path that it cannot restore; pass a "
                       "path without [, ] or \\ (rename the folder).")
  refused = utf8_refusal(absolute, "Orbax saves its checkpoints' arrays (TensorStore, which "
                         "takes UTF-8 paths) elsewhere or not at all")
  if refused is not None:
    raise WorkdirError(f"the workdir {refused}")
  check_path_room(absolute)


def check_path_room(workdir: str) -> None:
  """Raises `WorkdirError` where the paths a run writes below `workdir` (`RUN_PATH_ROOM`
  bytes more, its checkpoints' array files) would pass the longest path the system takes
  (PATH_MAX). Writes nothing.

  Was: a legal workdir of about 3,980 characters trained, then failed at its first checkpoint
  with a 154-line traceback (tensorstore's "File name too long"), the steps lost (fault hunt).

  Args:
    workdir: an absolute path.
  Raises:
    WorkdirError: naming the path's length, the limit and the fix.
  """
  try:
    limit = os.pathconf(nearest_existing(workdir), "PC_PATH_MAX")
  except (OSError, ValueError):
    limit = -1
  limit = limit if limit > 0 else _DEFAULT_PATH_MAX
  size = len(os.fsencode(workdir))
  if size + RUN_PATH_ROOM >= limit:
    raise WorkdirError(f"the workdir {shown_bytes(workdir)[:60]}... is {size} bytes long: the "
                       f"paths of its checkpoints (up to {RUN_PATH_ROOM} bytes more) would "
                       f"pass the {limit} bytes this system takes in a path; pass a --workdir "
                       f"of at most {limit - RUN_PATH_ROOM - 1} bytes.")


# What `utf8_refusal`'s callers that read a run say of its reader.
READ_BY_TENSORSTORE = "its checkpoints are read by TensorStore, which takes UTF-8 paths only"


def utf8_refusal(path: str, consequence: str) -> Optional[str]:
  """The end of the error line for a path `is_utf8_path` refuses: the path as it can be
  shown, what is wrong, `consequence` and the fix (`not_utf8_words`); the caller puts what
  the path is before it ("the workdir "). The one wording of the workdir's check in training,
  infer.py and `inference.load_trained`.

  Args:
    path: an absolute path, as `os.fsdecode` gives it.
    consequence: what would go wrong with it, as a clause ("its checkpoints are read by ...").
  Returns:
    The words, ending in a full stop; None where `path` is fine.
  """
  if is_utf8_path(path):
    return None
  what, fix = not_utf8_words(path)
  return f"{shown_bytes(path)} {what}, and {consequence}; {fix}."


def not_utf8_words(path: str) -> tuple[str, str]:
  """What is wrong with a path that `is_utf8_path` refuses, and the fix, for error lines.

  Args:
    path: the path, as `os.fsdecode` gives it.
  Returns:
    (what, fix): "is not a valid UTF-8 name" and a name that is where its bytes are not
    UTF-8; else it is this process's encoding (a Latin-1 locale outside Python's UTF-8 mode),
    and the fix is a name of ASCII letters, or, where its bytes are UTF-8 (a UTF-8 terminal
    under that locale), a UTF-8 locale or PYTHONUTF8=1 (not where the interpreter ignores the
    environment: -E, -I); a name typed in Latin-1 is not UTF-8 in any locale (read-through).
  """
  try:
    path.encode("utf-8")
  except UnicodeEncodeError:  # Bytes on disk that are not UTF-8 (caf\xe9).
    return ("is not a valid UTF-8 name",
            "use a name that is valid UTF-8 (rename the folder where it exists)")
  what = (f"cannot be written as UTF-8 in this process (its file-system encoding is "
          f"{sys.getfilesystemencoding()})")
  fix = "use a name of ASCII letters (rename the folder where it exists)"
  try:
    os.fsencode(path).decode("utf-8")
  except (UnicodeError, ValueError):  # Latin-1 bytes: no locale makes them UTF-8.
    return what, fix
  mode = "" if sys.flags.ignore_environment else " or with PYTHONUTF8=1 in the environment"
  return what, f"{fix}, or run under a UTF-8 locale (e.g. LC_ALL=C.UTF-8){mode}"


def shown_bytes(path: str) -> str:
  """`path` as its bytes on disk read as UTF-8, those that are not valid UTF-8 escaped
  (`caf\\xe9`): a line naming it can be printed whatever the console's encoding.

  Args:
    path: a path, as `os.fsdecode` gives it.
  Returns:
    The text to show.
  """
  try:
    return os.fsencode(path).decode("utf-8", "backslashreplace")
  except UnicodeEncodeError:  # A character the locale cannot write: not on disk as such.
    return path


def is_utf8_path(path: Union[str, os.PathLike]) -> bool:
  """Whether `path` names the same bytes on disk as its UTF-8 encoding: what the libraries
  that take paths as UTF-8 text (TensorStore under Orbax, the ArrayRecord writer) write to.

  Not where it holds a surrogate escape (Python's name for a byte that is not valid UTF-8:
  `caf\\xe9`; was 69 tracebacks at the first checkpoint save, fault hunt), nor, in a process
  whose file-system encoding is not UTF-8 (a Latin-1 locale, outside Python's UTF-8 mode),
  where its bytes there differ from its UTF-8 ones: "run_é" was saved as empty checkpoint
  folders there, its arrays written to a folder named "run_Ã©" (fault hunt).

  Args:
    path: a path (str or os.PathLike), as `os.fsdecode` gives it.
  Returns:
    True where the file system's bytes of `path` are its UTF-8 bytes.
  """
  text = os.fspath(path)
  if isinstance(text, bytes):
    text = os.fsdecode(text)
  try:
    return os.fsencode(text) == text.encode("utf-8")
  except UnicodeEncodeError:  # A surrogate escape; or a character the locale cannot write.
    return False


def is_encodable(char: str) -> bool:
  """Whether the file system's encoding can write `char` (a surrogate escape of a byte that
  is not valid UTF-8 writes as that byte; a CJK character under a Latin-1 locale cannot).

  Args:
    char: a character (or any text).
  Returns:
    True where `os.fsencode` takes it.
  """
  try:
    os.fsencode(char)
  except UnicodeEncodeError:
    return False
  return True


def fitted_name(name: str, room: int,
                writable: Optional[Callable[[str], bool]] = None) -> str:
  """`name` with "_" for each character that `writable` refuses, cut to its longest start
  (whole characters) of at most `room` bytes in the file system's encoding: the one rule by
  which infer.py's file names (`infer._fitted`) and the folder dataset's prepared copies
  (`data.folder._prepared_name`) are made writable. A name that needs neither is returned as
  it is, so `fitted_name(name, room) != name` says whether anything changed.

  Args:
    name: a file or folder name (or a part of one).
    room: the bytes it may take.
    writable: which characters may stay (None: `is_encodable`; `is_utf8_path` for the
      libraries that take paths as UTF-8 text). It must refuse none that the file system's
      encoding cannot write.
  Returns:
    The name; "" where not even its first character fits.
  """
  writable = writable or is_encodable
  kept = []
  for char in name:
    char = char if writable(char) else "_"
    room -= len(os.fsencode(char))  # Bytes, not characters: a CJK character is 3 in UTF-8.
    if room < 0:
      break
    kept.append(char)
  return "".join(kept)


def check_workdir(workdir: str, folders: Iterable[str] = (),
                  plain_files: Iterable[str] = ()) -> None:
  """Raises `WorkdirError` unless `workdir` is (or can be made) a writable directory whose
  entries named in `folders` and `plain_files`, where they exist, are folders and files.

  Writes nothing: run before anything else, so that a bad --workdir fails at once.

  Args:
    workdir: an absolute path.
    folders: names of entries the run keeps as folders (a file of that name would stop it
      when it first writes there, after training: was a traceback).
    plain_files: names of entries the run keeps as files.
  Raises:
    WorkdirError: `workdir` or a parent is a file, or a symbolic link to nothing; an entry
      is of the wrong kind, or a folder of `folders` that cannot be written; or no folder can
      be written there.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir={workdir} is a file, not a directory; pass a directory "
                       "(it is created if missing).")
  # Was: "cannot write to ... (File exists)" from the lock's makedirs, which names neither
  # the link nor the fix (fault hunt).
  link = _dangling_link(workdir)
  if link is not None:
    where, fix = _link_to_nothing(link)
    raise WorkdirError(f"--workdir={workdir}: {link} is a symbolic link to {where}; {fix}, "
                       "or pass another --workdir.")
  for names, is_kind, kind in ((folders, os.path.isdir, "folder"),
                               (plain_files, os.path.isfile, "file")):
    for name in names:
      path = os.path.join(workdir, name)
      if os.path.islink(path) and not os.path.exists(path):
        where, fix = _link_to_nothing(path, kind)
        raise WorkdirError(f"{path} is a symbolic link to {where}, and the run keeps its "
                           f"{name} there as a {kind}; {fix}, or pass another --workdir.")
      if os.path.lexists(path) and not is_kind(path):
        raise WorkdirError(f"{path} is not a {kind}, and the run keeps its {name} there as "
                           f"a {kind}; move it away, or pass another --workdir.")
      # Was found only when the run first wrote there: a checkpoints/ of another user's (a
      # run started with sudo) or on a read-only mount failed the first save, a checkpoint
      # interval of steps lost (fault hunt). A file is replaced by a rename in the workdir.
      if kind == "folder" and os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
        raise WorkdirError(f"cannot write to {path}, where the run keeps its {name} (permission "
                           "denied or a read-only file system); make it writable (chown or "
                           "chmod it, or mount it read-write), or pass another --workdir.")
  existing = nearest_existing(workdir)
  if not os.path.isdir(existing):  # Not a permission problem: no folder can be made there.
    raise WorkdirError(f"--workdir={workdir} is inside {existing}, which is a file, not a "
                       "directory; pass a path whose parents are directories.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise WorkdirError(f"cannot write to {existing} (permission denied or a read-only file "
                       "system); pass a --workdir you can write to.")


def _dangling_link(path: str) -> Optional[str]:
  """`path` or the nearest of its parents that is a symbolic link leading nowhere (to a
  missing target, or round a loop of links), or None where there is none before the first
  that exists."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    if os.path.islink(path):
      return path
    parent = os.path.dirname(path)
    if parent == path:
      return None
    path = parent
  return None


def _link_to_nothing(link: str, kind: str = "folder") -> tuple[str, str]:
  """What the symbolic link `link`, which leads nowhere, names and how to mend it: ("X, which
  does not exist", "create that folder (mkdir -p X) or remove the link"), or for a target
  that is a link itself ("X, which leads nowhere (...)", "remove the link or point it at a
  folder"). A `kind` "file" (an entry the run writes) is mended by removing the link."""
  try:
    target = os.readlink(link)
  except OSError:  # Removed or replaced since.
    return "nothing", "remove the link"
  resolved = os.path.join(os.path.dirname(link), target)
  if os.path.lexists(resolved):  # A link itself, to nothing or back round.
    return (f"{target}, which leads nowhere (a loop of links, or a link to nothing)",
            "remove the link or point it at a folder")
  if kind != "folder":  # A file the run writes: not one to make by hand.
    return f"{target}, which does not exist", "remove the link"
  return (f"{target}, which does not exist",
          f"create that folder (mkdir -p {os.path.normpath(resolved)}) or remove the link")


# What `flock` raises on a file system without locks.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)

# How long `workdir_lock` retries a lock it finds held before it refuses the workdir: the probe
# of `check_workdir_free` holds its shared lock for an instant, a run for its whole training.
_LOCK_RETRY_S = 1.0


def _in_use(workdir: str, fd: int) -> WorkdirError:
  """The error for `workdir`, whose lock file (open as `fd`) another process holds."""
  holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
  return WorkdirError(f"{workdir} is in use by another run ({holder}); wait for it to "
                      "finish or stop it, or pass another --workdir.")


def check_workdir_free(workdir: str) -> None:
  """Raises `WorkdirError` where another process holds `workdir_lock` on `workdir`, so that a
  run can say so before its data load. Writes nothing: the lock file is only opened (read-only)
  where it exists.

  A probe, not a lock: the workdir may be taken after it returns, and `workdir_lock` remains
  what keeps two runs apart. It holds a shared lock for an instant, which `workdir_lock`
  waits out (`_LOCK_RETRY_S`) rather than refuse a run that takes the lock in that instant.

  Args:
    workdir: an absolute path.
  Raises:
    WorkdirError: another process holds the lock, or its lock file is one this user may not
      write (`_lock_file_not_writable`).
  """
  path = os.path.join(workdir, LOCK_FILE)
  lock_held(path, lambda fd: _in_use(workdir, fd))
  words = _lock_file_not_writable(workdir, path)
  if words is not None:  # Was said by the lock alone, after the data load (read-through).
    raise WorkdirError(words)


def lock_held(path: str, refuse: Optional[Callable[[int], Exception]] = None) -> bool:
  """Whether another holder has the lock file `path` (`waiting_lock`, `workdir_lock`) now: a
  look that takes a shared `flock` without waiting and lets it go at once. `flock` locks
  belong to an open file, so a lock this process holds through another open file counts too.

  Args:
    path: the lock file.
    refuse: where given, called with the open lock file's descriptor where it is held (to
      read who holds it), and what it returns is raised.
  Returns:
    True where the look is refused; False where it is not, or the file is missing, is not a
    plain file, cannot be opened (by this user), or its file system has no locks.
  Raises:
    Exception: `refuse`'s, where the lock is held.
  """
  try:  # Non-blocking: a FIFO of that name would block the open.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
  except OSError:
    return False
  try:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
      return False
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    return False
  except BlockingIOError:
    if refuse is not None:
      raise refuse(fd) from None
    return True
  except OSError:  # A file system without locks: the lock decides.
    return False
  finally:
    os.close(fd)  # Lets the shared lock go, if taken.


def listed(folder: str) -> list[str]:
  """The names in `folder`, sorted; [] where it cannot be listed (missing, not a folder).

  Args:
    folder: a path.
  Returns:
    The names.
  """
  try:
    return sorted(os.listdir(folder))
  except OSError:
    return []


class HeldWorkdir:
  """What `workdir_lock` yields: what it created, and `take_back`, which a caller sets to
  remove that as the lock is released (a run refused before it wrote anything of its own: was
  left with the lock file, and the workdir it had made). Nothing that was there before the
  lock is removed: the lock file where it was the lock's, and folders only where they are
  empty by then.

  Attributes:
    folders: the folders the lock created (the workdir and its missing parents), outermost
      first.
    lock_made: whether the lock created its lock file.
    take_back: set by the caller: remove the lock file and the folders as the lock is
      released.
  """

  def __init__(self):
    self.folders: list[str] = []
    self.lock_made = False
    self.take_back = False


def missing_folders(path: str) -> list[str]:
  """The folders that making the folder `path` (`os.makedirs`) would create: `path` and
  those of its parents that do not exist, deepest first, as they are now.

  A look, not a record: a folder another process makes between this look and the making is
  in the list all the same, and taking the list back (`remove_empty_folders`) removes it
  where it is still empty. A writer that makes its folders itself records them with
  `make_folders`; this list is for one whose folders another library makes (TFDS's
  preparation), where that window stays.

  Args:
    path: a folder to be made (a relative path is taken from the working directory).
  Returns:
    Absolute paths, deepest first; [] where `path` exists. A name taken by anything (a
    file, a symbolic link, even to nothing) ends the list: no folder would be made there.
  """
  missing, path = [], os.path.abspath(path)
  while not os.path.lexists(path):
    missing.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


def remove_empty_folders(folders: Iterable[str]) -> list[str]:
  """Removes each of `folders`, deepest first, while it is empty: the first that holds
  anything (another run's files, a lock file, the user's) stays, and so do all after it. A
  folder that is gone already (another process took it back, or it was never made: a
  writer that failed before it) holds nothing: the next is looked at.

  Only folders the caller made itself are to be passed (those `make_folders` returned,
  deepest first): an empty folder of the user's, or another process's, would go too.
  (`missing_folders`' list, taken before the folders are made, holds one that another
  process made in between as well.)

  Args:
    folders: the folders, deepest first.
  Returns:
    Those removed.
  """
  removed = []
  for folder in folders:
    try:
      os.rmdir(folder)
    except FileNotFoundError:
      continue
    except OSError:  # Not empty, a file, or not this user's to remove.
      break
    removed.append(folder)
  return removed


# How many times `make_folders` makes its folders again where another process took one of
# them back meanwhile.
_MAKE_RETRIES = 100


def make_folders(path: str) -> list[str]:
  """Creates the folder `path` and its missing parents, as `os.makedirs(path, exist_ok=True)`
  does, and says which of them this call created: the record a writer takes back on a failure
  (`remove_empty_folders`, which wants them deepest first: `reversed(...)`).

  A folder another process makes at the same time (between the look and the `os.mkdir`) is
  not among them (was: `missing_folders`' list, taken before `os.makedirs`, held it, and an
  empty one was removed on a failure; review). A parent that another process removes between
  the look and the making of a folder in it (another run's take-back) is made again (was:
  "cannot write to ... (No such file or directory)"; review), up to `_MAKE_RETRIES` times, as
  `waiting_lock` looks again. Where a folder cannot be made, those this call made are removed
  again, while empty, before the error is raised (was: --out=x/<too long a name> left x).

  Args:
    path: the folder (a relative path is taken from the working directory).
  Returns:
    The absolute paths of the folders this call created, outermost first (the order they
    were made in); [] where `path` was a folder already.
  Raises:
    OSError: a folder cannot be made (permissions, a full disk, a name too long;
      FileExistsError where `path` is a file or a link to nothing, NotADirectoryError where
      a parent is a file); nothing this call made is left then.
  """
  made: list[str] = []
  try:
    for attempt in range(_MAKE_RETRIES):
      try:
        for folder in reversed(missing_folders(path)):
          try:
            os.mkdir(folder)
          except FileExistsError:  # Made meanwhile by another (or a file: said below).
            continue
          if folder not in made:
            made.append(folder)
        break
      except FileNotFoundError:
        if attempt == _MAKE_RETRIES - 1:
          raise
    full = os.path.abspath(path)
    if not os.path.isdir(full):  # A file or a link to nothing, as `os.makedirs` says.
      raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), full)
  except BaseException:  # A Ctrl-C too.
    remove_empty_folders(reversed(made))
    raise
  return made


def _open_lock_file(path: str) -> tuple[int, bool]:
  """The lock file `path`, open for reading and writing, and whether this call created it.

  Made with mode 0o666 less the umask, as every other file of a run (was 0o644 whatever the
  umask: a group member of a shared run, umask 002, was refused its resume by this file
  alone, "cannot write to ... (permission denied)"; fault hunt). Not opened read-only where
  it cannot be written: on NFS an exclusive `flock` needs a file open for writing (a
  read-through found EBADF's traceback after the data load), and its holder line would be
  another run's (`_lock_file_not_writable` says what to do instead).
  """
  for _ in range(100):
    try:
      return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666), True
    except FileExistsError:
      try:
        return os.open(path, os.O_RDWR), False
      except FileNotFoundError:  # Removed meanwhile by a holder that took it back; or a
        continue  # link to nothing, opened below as before.
  return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), False


def _lock_file_not_writable(workdir: str, path: str) -> Optional[str]:
  """The error line's words where the lock file `path` exists and this user may not write it,
  in a workdir they may (another user's, made 0o644 under umask 022 or by a version before the
  umask applied to it; or their own, made read-only); else None."""
  try:
    owner = os.stat(path).st_uid
  except OSError:
    return None
  if (not os.path.isfile(path) or os.access(path, os.W_OK)
      or not os.access(workdir, os.W_OK | os.X_OK)):
    return None
  if owner == os.getuid():
    return (f"cannot write the run's lock file {path} (permission denied); make it writable "
            f"(chmod u+w {path}), then run the same command again.")
  return (f"cannot write the run's lock file {path} (permission denied), which another user "
          f"(uid {owner}) made; ask them to make it group-writable (chmod g+w {path}), or to "
          "delete it where no run of theirs uses the workdir, then run the same command again.")


def _take_back(held: HeldWorkdir, path: str) -> None:
  """Removes what `workdir_lock` made, its lock file `path` (still held) first, then the
  folders it made, innermost first, while they are empty. Best effort: what cannot go stays."""
  try:
    if held.lock_made:
      os.unlink(path)
  except OSError:  # Its folder then holds it, and stays.
    pass
  remove_empty_folders(reversed(held.folders))


def _hold_lock(path: str, open_lock: Callable[[], Optional[int]],
               wait: Callable[[int], None]) -> tuple[Optional[int], Optional[OSError]]:
  """The loop `workdir_lock` and `waiting_lock` share: opens the lock file `path`
  (`open_lock`) and takes an exclusive `flock` on it, until the file locked is still the
  file at `path`: the holder before may have removed it (a run taken back, a preparation
  that failed discards its copy), and a lock on a removed file excludes no one who comes
  later; it is then opened again.

  Args:
    path: the lock file.
    open_lock: opens `path` and returns the open file; None: the work runs unlocked (it
      cannot be opened). May raise, as its caller wants.
    wait: called with the open file where another process holds the lock; returns once
      this one holds it, or raises (the file is closed then).
  Returns:
    The open file (None where `open_lock` gave none), and the error `flock` raised on a file
    system without locks (`_NO_LOCKS`; the file is open but not locked), else None.
  Raises:
    OSError: `flock` failed otherwise; what `open_lock` and `wait` raise.
  """
  while True:
    fd = open_lock()
    if fd is None:
      return None, None
    no_locks = None
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        wait(fd)
      except OSError as e:
        if e.errno not in _NO_LOCKS:
          raise
        no_locks = e
    except BaseException:
      os.close(fd)
      raise
    if _same_file(fd, path):
      return fd, no_locks
    os.close(fd)  # Removed by the holder before: opened again.


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[HeldWorkdir]:
  """Holds `workdir/.lock` (an exclusive `flock`) for the block: one run per workdir.

  The lock file names its holder (pid and host); the kernel releases the lock when the
  process ends, however it ends, so a killed run never leaves the workdir locked. A lock held
  for an instant (the probe of `check_workdir_free`) is waited out, up to `_LOCK_RETRY_S`. On
  a file system without locks the block runs unlocked, with one warning. A lock file removed
  by the holder before (`HeldWorkdir.take_back`) is made again, not held removed.

  Args:
    workdir: the run's directory; created if missing.
  Yields:
    A `HeldWorkdir`: what the lock made, and whether to take it back at the end; the lock is
    held until the block ends.
  Raises:
    WorkdirError: another process holds the lock, or the workdir cannot be written.
  """
  path = os.path.join(workdir, LOCK_FILE)
  held = HeldWorkdir()
  deadline = time.monotonic() + _LOCK_RETRY_S

  def open_lock() -> int:
    try:
      # Outermost first (`HeldWorkdir`), also with one made again after a take-back.
      held.folders = sorted(set(held.folders) | set(make_folders(workdir)), key=len)
      fd, made = _open_lock_file(path)
    except OSError as e:
      _take_back(held, path)  # The folders it made, if any.
      words = _lock_file_not_writable(workdir, path) if isinstance(e, PermissionError) else None
      if words is not None:
        raise WorkdirError(words) from None
      # Advice by its errno (was "pass a --workdir you can write to" alone, also for a full
      # disk or a failed one); a name in the way, a name too long: that alone.
      fix = f"{storage_fix(e)} or " if storage_error(e) is not None else ""
      raise WorkdirError(f"cannot write to {workdir} ({describe_storage_error(e)}); {fix}pass "
                         "a --workdir you can write to.") from None
    held.lock_made = held.lock_made or made
    return fd

  def wait(fd: int) -> None:  # A run holds it, or a probe for an instant: looked at again.
    while True:
      if time.monotonic() >= deadline:
        raise _in_use(workdir, fd) from None
      time.sleep(0.02)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
      except BlockingIOError:
        continue

  fd, no_locks = _hold_lock(path, open_lock, wait)
  if no_locks is not None:  # A file system without locks (NFS without its lock service): was
    # OSError's traceback, no run possible there (fault hunt); unlocked, as `waiting_lock`
    # runs its work.
    logging.warning("the file system of %s has no locks (%s): a second run started there "
                    "meanwhile would not be refused; start one run per workdir", workdir,
                    no_locks.strerror or no_locks)
  try:
    try:  # A full disk (review finding: a traceback).
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
    except OSError as e:
      held.take_back = True  # Nothing of the run's is there yet.
      raise WorkdirError(f"cannot write to {workdir} ({describe_storage_error(e)}); "
                         f"{storage_fix(e)} or pass a --workdir you can write to.") from None
    yield held
  finally:
    if held.take_back:  # The lock file first, while it is held.
      _take_back(held, path)
    os.close(fd)  # Releases the lock.


@contextlib.contextmanager
def waiting_lock(path: str, what: str,
                 say: Optional[Callable[[str], None]] = None) -> Iterator[bool]:
  """Holds an exclusive `flock` on the file `path` for the block, waiting for any other
  process that holds it: for work two runs must not do at once on shared files (unpacking
  one archive, preparing one dataset). The kernel releases it when a process ends, however
  it ends. Where the file system has no locks, or the lock file cannot be made (a folder
  this user may not write, read-only storage, a path under a file), the block runs
  unlocked.

  Args:
    path: the lock file; created (with its folder) if missing. The block may remove it (or
      its folder): a process waiting then takes a fresh one.
    what: the work, for the waiting line, e.g. "unpacking lfw.tgz".
    say: how the waiting line is said; None: an INFO line (not shown on a console set to
      warnings only).
  Yields:
    Whether the lock is held (until the block ends): False where the block runs unlocked,
    for work that is safe only under it (removing what another process may be writing).
  """
  def open_lock() -> Optional[int]:
    for _ in range(100):  # Not forever: a link to nowhere stays missing.
      try:  # Read-only where it exists (flock needs no write access): a second user's too.
        if os.path.exists(path):
          return os.open(path, os.O_RDONLY)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
      except FileNotFoundError:  # Removed (with its folder) between the look and the open
        continue  # by the holder: another look (was: the work ran unlocked beside the
        # holder's).
      except OSError:  # A folder this user may not write, or under a file: the work itself
        return None  # will say what it needs.
    return None

  def wait(fd: int) -> None:
    (say or logging.info)(f"waiting for another process {what} (lock {path})")
    fcntl.flock(fd, fcntl.LOCK_EX)

  fd, no_locks = _hold_lock(path, open_lock, wait)
  if fd is None:
    yield False
    return
  try:
    yield no_locks is None  # Unlocked on a file system without locks.
  finally:
    os.close(fd)  # Releases the lock.


def _same_file(fd: int, path: str) -> bool:
  """Whether the open file `fd` is still the file at `path`."""
  try:
    here, there = os.fstat(fd), os.stat(path)
  except OSError:
    return False
  return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


class WorkdirWatch:
  """Notices that a run's workdir was deleted, moved or replaced while the run writes to it:
  the training loop's metrics writer and checkpointer share one and check it before each row
  and each save.

  Was: a workdir removed (rm -rf) during training went unnoticed: the rows went to the
  deleted metrics file (lost), Orbax made checkpoints/ again under the path (a workdir with
  checkpoints but no config.json, dataset.json or metrics), and the run ended in a
  FileNotFoundError's traceback from the metrics writer (fault hunt).

  The folder is held open from the start, so its inode cannot be reused by a new folder at
  the same path, and a check is a few `stat` calls. It is opened with O_PATH where the system
  has it (Linux), which needs no read permission: a workdir of mode 0o300 is watched too.
  Where even that fails, nothing is watched and every check passes (the writes themselves
  then say what is wrong). `close` (or the garbage collector) lets it go.

  Args:
    workdir: an absolute path to an existing folder.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    flags = getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0)
    try:  # Was O_RDONLY alone: a PermissionError's traceback for a folder of mode 0o300.
      self._fd: Optional[int] = os.open(workdir, flags)
    except OSError:
      self._fd = None
    # Set by the run's checkpointer: whether a folder (its path) holds nothing but what this
    # run's saves under way may have written there again after the workdir went (Orbax's
    # thread makes the folders of the files it writes), and so is not another folder.
    self.leftovers: Optional[Callable[[str], bool]] = None
    # Set by it too: the steps whose folders its saves under way may have finished at the
    # path after the workdir went ([] where the folder there holds anything else).
    self.rebuilt: Optional[Callable[[str], list]] = None
    # Set by the first check that found the folder gone: whether nothing stood at its path
    # then, or only what this run's saves wrote there again (`left_behind`): a folder there
    # is then not the user's, and may be taken back where left empty.
    self.path_was_free: Optional[bool] = None
    # The run's lock file (`workdir_lock`), where there is one: an rm -rf that Orbax's
    # thread raced (it made its folders again inside) leaves the folder itself, emptied of
    # the run's files (review: the run trained on to its end there, then stopped in a
    # FileNotFoundError's traceback).
    self._lock = _file_id(os.path.join(workdir, LOCK_FILE))

  def _emptied(self) -> bool:
    """Whether the folder, which held a lock file at the start, holds neither that nor any
    other file now (folders only): its files were removed. A lock file removed alone (a
    clean-up of lock files) is not that: the run goes on."""
    if self._lock is None or _file_id(os.path.join(self.workdir, LOCK_FILE)) == self._lock:
      return False
    try:
      with os.scandir(self.workdir) as entries:
        return not any(entry.is_file(follow_symlinks=False) for entry in entries)
    except OSError:
      return False

  def is_in_place(self) -> bool:
    """Whether the watched folder is still the one at the workdir's path (False where
    nothing is watched).

    Returns:
      The answer.
    """
    return self._fd is not None and _same_file(self._fd, self.workdir)

  def left_behind(self) -> bool:
    """Whether the folder at the workdir's path (another folder, or the watched one emptied
    of its lock file) holds only what this run wrote there again after the watched one went
    or was emptied (`leftovers`), and no `LOCK_FILE`.

    Returns:
      False where the watched folder is still there as it was, nothing or a file is at the
      path, or the folder there is (or may be) anyone else's.
    """
    if self._fd is None or self.leftovers is None:
      return False
    try:
      if _same_file(self._fd, self.workdir):
        if not self._emptied():  # The run's own folder, in use.
          return False
      elif not os.path.isdir(self.workdir) or os.path.islink(self.workdir):
        return False
      if os.path.lexists(os.path.join(self.workdir, LOCK_FILE)):
        return False
      return bool(self.leftovers(self.workdir))
    except OSError:
      return False

  def check(self, doing: str) -> None:
    """Raises `WorkdirError` where the workdir is no longer the folder at its path.

    Args:
      doing: what was about to be written, for the message ("the metrics row of step 6").
    Raises:
      WorkdirError: the folder was deleted, or moved (with where to, where the system
        says), or another stands at its path now, or its files were deleted (its lock file
        with them) and the folder left empty of files.
    """
    if self._fd is None:
      return
    if _same_file(self._fd, self.workdir):
      if not self._emptied():
        return
      raise WorkdirError(
          f"the files of the workdir {self.workdir} were deleted while training (its lock file "
          f"{LOCK_FILE} with them), before {doing}: its checkpoints and records went with "
          "them, and this run's work is lost; train anew: run the same command again.")
    try:
      there = os.stat(self.workdir)
    except FileNotFoundError:
      there = None
    except OSError:  # Not a question of where the folder is: the write says what it is.
      return
    if there is not None and not stat.S_ISDIR(there.st_mode):
      there = None
    # What this run's own save wrote there again is taken back at the checkpointer's close:
    # not another folder (was: said as one, with "use a new folder", and the run then resumed
    # from that step without its records; review).
    other = there is not None and not self.left_behind()
    if self.path_was_free is None:
      self.path_was_free = not other
    # A step folder this run's save finished at the path after the folder went: the run's,
    # not another folder, and kept (it may be a copy put back), but it may lack the files
    # written before (review: called "not this run's", or resumed from by "the same command").
    rebuilt = self.rebuilt(self.workdir) if other and self.rebuilt is not None else []
    other = other and not rebuilt
    deleted, moved_to = _where_open_folder_is(self._fd)
    now = (" (another folder stands at its path now, which is not this run's)" if other else
           f" (its checkpoint of step {rebuilt[-1]}, finished there after the folder went, "
           "stands at its path now and may lack the files written before)" if rebuilt else "")
    lost = f"while training{now}, before {doing}:"
    if moved_to is not None:
      back = f"once {self.workdir} is deleted, " if rebuilt else ""
      raise WorkdirError(
          f"the workdir {self.workdir} was moved to {moved_to} {lost} the steps since its last "
          f"checkpoint are lost; to resume, run the same command with --workdir={moved_to} "
          f"(or, {back}move the folder back).".replace("(or, move", "(or move"))
    anew = ("run the same command with --workdir=<a new folder>" if other else
            f"delete {self.workdir}, then run the same command again" if rebuilt else
            "run the same command again")
    if deleted:
      raise WorkdirError(
          f"the workdir {self.workdir} was deleted {lost} its checkpoints and records went "
          f"with it, and this run's work is lost; train anew: {anew}.")
    raise WorkdirError(
        f"the workdir {self.workdir} was deleted or moved {lost} the steps since its last "
        "checkpoint are lost; if you moved it, run the same command with --workdir=<its new "
        f"path> to resume; if it was deleted, train anew: {anew}.")

  def close(self) -> None:
    """Lets the folder go; later checks pass."""
    fd, self._fd = self._fd, None
    self.leftovers = self.rebuilt = None
    if fd is not None:
      os.close(fd)

  def __del__(self):
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except  # At the interpreter's exit: nothing.
      pass


def _file_id(path: str) -> Optional[tuple[int, int]]:
  """(device, inode) of the plain file at `path`; None where there is none."""
  try:
    there = os.lstat(path)
  except OSError:
    return None
  return (there.st_dev, there.st_ino) if stat.S_ISREG(there.st_mode) else None


def _where_open_folder_is(fd: int) -> tuple[bool, Optional[str]]:
  """Whether the folder open as `fd` was deleted (its last link gone), and where it is now,
  where the system says (Linux's /proc/self/fd); (False, None) where it says neither."""
  try:
    if os.fstat(fd).st_nlink == 0:
      return True, None
    path = os.readlink(f"/proc/self/fd/{fd}")
  except OSError:
    return False, None
  return False, (path if os.path.isabs(path) and os.path.isdir(path) else None)


# The shortest compile worth a cache entry (`enable_compilation_cache`): reading an entry
# takes tens of milliseconds.
MIN_CACHED_COMPILE_S = 0.25


# `config.compilation_cache_dir`'s default (configs/default.py): `enable_compilation_cache`
# reads it as the user's environment says.
DEFAULT_COMPILATION_CACHE_DIR = "~/.cache/a2i_jax/xla"


def host_memory() -> Optional[int]:
  """The host's physical memory in bytes, for the checks that refuse what cannot fit in it
  (a model's initial values, a grid of images) before any is taken.

  Returns:
    The bytes; None where the system does not say.
  """
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return None


def user_cache_dir() -> str:
  """This project's folder of per-user caches: $XDG_CACHE_HOME/a2i_jax, or ~/.cache/a2i_jax.

  A relative XDG_CACHE_HOME (a literal "~/.cache" from a container's environment, say) is
  ignored, as the XDG specification says (was: a start that hung without a word; review).

  Returns:
    The path (not made here); "" where there is no home folder to put it in (HOME unset and
    this user not in the password database, as a container's arbitrary user: was a relative
    "~/.cache/a2i_jax", made in the working folder as a folder named "~"; fault hunt).
  """
  xdg = os.environ.get("XDG_CACHE_HOME", "")
  base = xdg if os.path.isabs(xdg) else os.path.expanduser("~/.cache")
  return os.path.join(base, "a2i_jax") if os.path.isabs(base) else ""


def no_home(path: str) -> Optional[str]:
  """Why `~` in `path` cannot be expanded, or None where it can (or `path` has none).

  `os.path.expanduser` leaves "~/x" as it is where HOME is unset and this user is not in the
  password database (a container's arbitrary user), and "~name/x" for a user the system does
  not know: used as it is, that was a folder named "~" in the working folder (fault hunt).

  Args:
    path: a path as a user wrote it.
  Returns:
    The reason in words ("no home folder: HOME is not set", "there is no user 'bob'"), or None.
  """
  path = os.fspath(path)
  if not path.startswith("~") or not os.path.expanduser(path).startswith("~"):
    return None
  # "~name/...": a user the system does not know (was told "HOME is not set"; fault hunt).
  head = path.split("/", 1)[0]
  return f"there is no user {head[1:]!r}" if head != "~" else "no home folder: HOME is not set"


def enable_compilation_cache(directory: str) -> None:
  """Turns on JAX's persistent compilation cache in `directory` ("" leaves it off).

  Called by the entry points (train.py, infer.py) and notebooks, not by the library: where
  compiled programs are cached is the caller's choice. Programs that compile in at least
  `MIN_CACHED_COMPILE_S` are kept (JAX's default is 1 s, and a paper model's `init` program
  compiles in 0.5-2 s on CPU); JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS, where set, wins.

  A folder that cannot be made (it lies under a file, or where this user may not write)
  leaves the cache off with one warning line (were JAX's warnings, two lines each, per
  program).

  The configs' default, `DEFAULT_COMPILATION_CACHE_DIR`, stands for JAX_COMPILATION_CACHE_DIR
  where that is set (set but empty: off, as JAX reads it), else $XDG_CACHE_HOME/a2i_jax/xla
  where that is (was: both ignored).

  Args:
    directory: the cache directory (`~` is expanded); "" for none.
  Raises:
    ConfigError: `directory` is blanks alone (was: a folder named " " made in the working
      folder, without a word; a review), as `config.data.cache_dir` is refused.
  """
  if isinstance(directory, str) and directory and not directory.strip():
    raise ConfigError(f"config.compilation_cache_dir={directory!r} is blank, no folder; set "
                      "it to a folder, or to \"\" to turn the cache off "
                      "(--config.compilation_cache_dir=\"\"; a trained run's: in its "
                      "config.json).")
  env = os.environ.get("JAX_COMPILATION_CACHE_DIR")

  def off_if_from_env() -> None:
    # JAX takes JAX_COMPILATION_CACHE_DIR as its own setting: "" (off) or a folder that
    # cannot be used left it on there (was: written to, with JAX's two-line warnings where
    # it is a file; review finding). So does an earlier call's folder (a notebook's: was
    # kept). A folder a caller set otherwise stays.
    if jax.config.jax_compilation_cache_dir in {env or None, *_CACHE_SET_HERE} - {None}:
      _use_cache_folder(None)
  if directory == DEFAULT_COMPILATION_CACHE_DIR:
    # Set but empty is JAX's "off" (was: taken as unset, and the cache turned on; review).
    directory = env if env is not None else (
        os.path.join(user_cache_dir(), "xla") if user_cache_dir() else directory)
  if not directory:
    off_if_from_env()
    return
  why = no_home(directory)
  if why is not None:  # No home folder (`user_cache_dir`).
    logging.warning("the compilation cache folder %s cannot be used (%s); %s. Set HOME or "
                    "XDG_CACHE_HOME, or config.compilation_cache_dir to an absolute path.",
                    directory, why, _cache_now())
    return
  path = os.path.abspath(os.path.expanduser(directory))
  existing = nearest_existing(path)  # Checked, not made: JAX makes it when it first keeps one.
  # A symbolic link to nothing on the way (a cache folder's link to a disk not mounted) made
  # JAX warn at every program, two lines each (fault hunt).
  link = _dangling_link(path)
  if (link is not None or not os.path.isdir(existing)
      or not os.access(existing, os.W_OK | os.X_OK)):
    why = (f"{link} is a symbolic link to nothing" if link is not None else
           f"{existing} is a file" if not os.path.isdir(existing) else
           f"{existing} cannot be written")
    if env and os.path.abspath(os.path.expanduser(env)) == path:
      off_if_from_env()
    logging.warning("the compilation cache folder %s cannot be used (%s); %s. Set "
                    "config.compilation_cache_dir to a folder you can write to, or to \"\" to "
                    "turn the cache off.", path, why, _cache_now())
    return
  _remove_empty_cache_entries(path)
  _repair_unreadable_cache_entries()
  _write_cache_entries_whole()
  _use_cache_folder(path)
  _CACHE_SET_HERE[:] = [path]
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_CACHED_COMPILE_S)


def _cache_now() -> str:
  """What `enable_compilation_cache`'s warnings say of a folder that cannot be used: programs
  compile anew, or, where a folder was set before (a notebook's earlier call), are kept there
  (was: "compiled anew" there too; fault hunt)."""
  folder = jax.config.jax_compilation_cache_dir
  return ("every program is compiled anew" if not folder else
          f"programs are kept in {folder} as before")


# The folder `enable_compilation_cache` set last in this process ([] where none).
_CACHE_SET_HERE: list[str] = []


def _use_cache_folder(path: Optional[str]) -> None:
  """Sets JAX's compilation cache folder to `path` (None: off). JAX opens its cache once, at
  the first compile that asks for it, and keeps it: a cache opened for another folder is
  closed here, so the next compile opens `path`'s (was: a notebook's second call, with
  another folder or "" for none, changed the setting alone, and every program went on to the
  first call's folder; fault hunt)."""
  if jax.config.jax_compilation_cache_dir == path:
    return
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=C0415
  jax.config.update("jax_compilation_cache_dir", path)
  compilation_cache.reset_cache()


def _remove_empty_cache_entries(path: str) -> None:
  """Removes the empty files in the compilation cache folder `path`. JAX writes an entry in
  place, so a full disk leaves it empty, and JAX never writes it again: every later run
  warned of it (two lines each, "truncated stream") and compiled the program anew, also once
  space was free (review finding). Removed, the program is compiled and kept once more.
  `_write_cache_entries_whole`'s temporary files that a process killed while it wrote left
  are removed too, once `_CACHE_TEMPORARY_STALE_S` old (a younger one may be being written)."""
  try:
    with os.scandir(path) as entries:
      for entry in entries:
        try:
          if not entry.is_file(follow_symlinks=False):
            continue
          if ((entry.name.endswith("-cache")  # Its entries only (not a lock file, say).
               and entry.stat().st_size == 0)
              or (_CACHE_TEMPORARY.fullmatch(entry.name)
                  and time.time() - entry.stat().st_mtime > _CACHE_TEMPORARY_STALE_S)):
            os.remove(entry.path)
        except OSError:  # Gone meanwhile, or not ours: JAX's warning says the rest.
          pass
  except OSError:  # Not made yet (JAX makes it), or not readable: nothing to do.
    pass


# How long after its last change a compilation cache entry that cannot be read may still be
# another process's, being written (JAX writes an entry in place where
# `_write_cache_entries_whole` does not apply: a size limit set, another program sharing the
# folder): it is taken as a miss then, and removed only when older.
CACHE_WRITE_GRACE_S = 10.0


def _repair_unreadable_cache_entries() -> None:
  """Has JAX's persistent compilation cache remove an entry that cannot be read when it reads
  it (`_remove_unreadable_cache_entry`), so that the program is compiled and kept again.

  JAX writes an entry in place and never writes a name that exists: one cut short (a disk
  that filled partway, a process killed while it wrote) was read at every later start, with
  JAX's two-line warning ("Error reading persistent compilation cache entry ... incomplete or
  truncated stream"), and its program compiled anew, forever (review finding). Checking every
  entry at start instead would cost a decompression of the whole cache (0.3-0.5 s for 94
  entries, 10 MB; it grows without bound); this costs nothing while entries read. Wraps a
  private function, present in jax 0.7.2 to 0.10; where it is missing, nothing changes.
  Idempotent.
  """
  try:
    from jax._src import compilation_cache  # pylint: disable=import-outside-toplevel
    read = compilation_cache.get_executable_and_time
  except (ImportError, AttributeError):
    return
  if getattr(read, "a2i_repairs", False):
    return

  def read_or_repair(cache_key, *args, **kwargs):
    try:
      return read(cache_key, *args, **kwargs)
    except Exception:  # pylint: disable=broad-except
      if not _remove_unreadable_cache_entry(compilation_cache, cache_key):
        raise  # JAX's own warning says it, as before.
      return None, None  # A miss: the program is compiled, and kept again.
  read_or_repair.a2i_repairs = True
  read_or_repair.__wrapped__ = read
  compilation_cache.get_executable_and_time = read_or_repair


def _remove_unreadable_cache_entry(compilation_cache: Any, cache_key: str) -> bool:
  """After JAX failed to read the entry `cache_key`: removes its file, with one warning line,
  where its bytes do not decompress and it is older than `CACHE_WRITE_GRACE_S`.

  Args:
    compilation_cache: JAX's module (`jax._src.compilation_cache`).
    cache_key: the entry's key ("jit_run-<hash>").
  Returns:
    True: the read is to be a miss (the entry was removed, or is gone, or may be being
    written now); False: JAX's error stands (the bytes read, so the failure lies elsewhere;
    the cache is not a local folder of files; JAX_RAISE_PERSISTENT_CACHE_ERRORS is set).
  """
  cache = getattr(compilation_cache, "_cache", None)
  folder = str(getattr(cache, "path", ""))
  if (getattr(jax.config, "jax_raise_persistent_cache_errors", False)
      or type(cache).__name__ != "LRUCache" or not os.path.isabs(folder)):
    return False
  path = os.path.join(folder, f"{cache_key}-cache")
  try:
    with open(path, "rb") as f:
      data, age = f.read(), time.time() - os.fstat(f.fileno()).st_mtime
  except FileNotFoundError:  # Removed meanwhile (by another process's repair).
    return True
  except OSError:
    return False
  try:
    compilation_cache.decompress_executable(data)
    return False
  except Exception:  # pylint: disable=broad-except  # zlib's error, or zstd's.
    pass
  if age <= CACHE_WRITE_GRACE_S:  # Maybe another process's, being written: left to it.
    return True
  try:
    os.remove(path)
  except FileNotFoundError:
    return True
  except OSError:
    return False
  logging.warning("the compilation cache entry %s could not be read (cut short or damaged: a "
                  "full disk, or a stop while it was written); removed, its program is compiled "
                  "and kept again", path)
  return True


# `_write_cache_entries_whole`'s temporary file for the entry NAME-cache:
# ".NAME-cache.XXXXXXXX.tmp" (tempfile's 8 random characters); JAX's own listings (its
# eviction's "*-cache") do not take it for an entry.
_CACHE_TEMPORARY = re.compile(r"\..+-cache\.[^.]+\.tmp")
# The age past which no process is still writing such a file: a kill's leftover.
_CACHE_TEMPORARY_STALE_S = 3600.0


def _write_cache_entries_whole() -> None:
  """Has JAX's persistent compilation cache write each entry under a temporary name and rename
  it into place when whole, so that no entry is ever there cut short.

  JAX (0.7.2 to 0.10, `LRUCache.put`) writes an entry in place: a disk that filled partway, or
  a process killed while it wrote, left the entry cut short under its final name (now
  repaired when read, `_repair_unreadable_cache_entries`), and another process that read it
  meanwhile took it for damage. Two processes that store one entry at once now each rename a
  whole file: the later one stays. Applies where JAX's size limit is off (its default; with
  JAX_COMPILATION_CACHE_MAX_SIZE set, JAX locks the folder and writes as before). Wraps a
  private method; where it is missing, nothing changes. Idempotent.
  """
  try:
    from jax._src import lru_cache  # pylint: disable=import-outside-toplevel
    put = lru_cache.LRUCache.put
  except (ImportError, AttributeError):
    return
  if getattr(put, "a2i_whole", False):
    return

  def put_whole(self, *args, **kwargs):
    folder = str(getattr(self, "path", ""))
    if (len(args) != 2 or kwargs or not args[0] or getattr(self, "eviction_enabled", True)
        or not os.path.isabs(folder)):  # Not as JAX 0.7.2 to 0.10 call it: JAX's own.
      return put(self, *args, **kwargs)
    key, value = args
    path = os.path.join(folder, f"{key}-cache")
    if os.path.exists(path):  # As JAX: a name that exists is not written again.
      return None
    fd, tmp = tempfile.mkstemp(prefix=f".{key}-cache.", suffix=".tmp", dir=folder)
    try:
      with os.fdopen(fd, "wb") as f:
        f.write(value)
      os.chmod(tmp, 0o666 & ~_UMASK)  # As JAX's own entries (mkstemp's is private).
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):  # A full disk: the error is JAX's warning, as before.
        os.remove(tmp)
    return None
  put_whole.a2i_whole = True
  put_whole.__wrapped__ = put
  lru_cache.LRUCache.put = put_whole
