"""What the LFW, CUB and folder builders share: sources, archives, preparation and reading.

Every real dataset is a `tfds.core.GeneratorBasedBuilder` that writes ArrayRecord files and
is read back with a TFDS data source, so TensorFlow is never imported:

- images reach the writer as PIL images (`tfds.features.Image` then encodes them with PIL;
  only NumPy images would go through `tf.image.encode_png`);
- archives are unpacked here with Python's `tarfile`, because TFDS's own `dl_manager.extract`
  and `iter_archive(path)` open files with `tf.io.gfile`;
- downloads go through `dl_manager.download`, whose HTTP path uses `requests` only;
- reading uses `builder.as_data_source()`, which decodes PNGs with PIL.

`tensorflow_datasets` itself is imported only here and only when a real dataset is asked
for, so `import a2i_jax` stays fast and works without it. That is also why this module runs
past the house's usual ~450 lines rather than being split: everything that touches TFDS (its
builders' base, preparing, quieting and reading a copy, checking a copy for damage) stays in
the one module that imports it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging as std_logging
import os
import re
import shutil
import socket
import stat
import sys
import tarfile
import urllib.parse
import urllib.request
import zlib
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
from absl import logging

from a2i_jax import files
from a2i_jax import progress as bars  # Callers pass a bool named progress.
from a2i_jax.data.base import (DataError, Dataset, DatasetNotPreparedError, Split, SPLITS,
                               SPLIT_IDS_KEY, check_attribute_names, ids_fingerprint)
from a2i_jax.errors import A2IError
from a2i_jax.inputs import shown_path, truncated_refused

# Inside a prepared copy's folder (<data_dir>/<name>/[<config>/]<version>): the SHA-256 of
# every file there, written once the copy is prepared and checked before every read.
CHECKSUM_FILE = "a2i_sha256.json"
# Inside an unpacked archive's folder (<archive>.d): which archive file it was unpacked from.
UNPACKED_MARKER = ".a2i_unpacked_from.json"
_IDENTITY_BYTES = 1 << 20  # Read from each end of an archive for its identity.


def import_tfds() -> Any:
  """Returns the `tensorflow_datasets` module, or raises a `DataError` saying how to get it.

  Returns:
    The `tensorflow_datasets` module.
  Raises:
    DataError: it cannot be imported (the message gives the pip command).
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DataError("the LFW, CUB and folder datasets are prepared with tensorflow-datasets "
                    f"({e}); install it with: pip install 'tensorflow-datasets>=4.9.9' "
                    "array-record (TensorFlow is not needed).") from e
  return tfds


@dataclasses.dataclass(frozen=True)
class Source:
  """One file a builder needs.

  Attributes:
    filename: its name in the manual folder.
    url: where it is published.
    size: its size as published (for the instructions), e.g. "233 MB"; "" if unknown.
    extracted: for an archive, the folder it unpacks to; a manual folder may hold that folder
      instead of the archive.
    extracted_with: for such an archive, a file at its root beside that folder which the
      builder reads too (CUB's attributes.txt); a manual folder holding the unpacked folder
      needs it beside it. "" if none.
  """
  filename: str
  url: str
  size: str
  extracted: str = ""
  extracted_with: str = ""


def instructions(sources: Sequence[Source], manual_dir: str) -> str:
  """The download instructions: every file with its URL and size, and where it goes.

  Args:
    sources: the files to list.
    manual_dir: the folder named as their destination (e.g. "<data_dir>/manual/lfw").
  Returns:
    Multi-line text: a heading line naming `manual_dir`, then one indented line per source
    with its file name, size (if known), URL and, for an archive, the unpacked folder that
    may stand in for it (with the file from the archive's root it needs beside it).
  """
  lines = [f"Download these files into {manual_dir} (create the folder):"]
  for s in sources:
    alt = f"; or its unpacked folder {s.extracted}/" if s.extracted else ""
    if s.extracted and s.extracted_with:
      # Was "or its unpacked folder CUB_200_2011/" alone: CUB's attributes.txt sits beside
      # that folder at the archive's root, and a manual folder without it was told to
      # delete the 1.15 GB of good data (fault hunt).
      alt += f" with the {s.extracted_with} from the archive's root beside it"
    size = f"  ({s.size})" if s.size else ""
    lines.append(f"  {s.filename}{size}  {s.url}{alt}")
  return "\n".join(lines)


def fetch_sources(dl_manager: Any, sources: Sequence[Source], manual_dir: str,
                  allow_download: bool, dataset: str) -> dict[str, str]:
  """Finds every source in `manual_dir`, downloading the missing ones if allowed.

  Args:
    dl_manager: the builder's `tfds.download.DownloadManager`; None: only look, before
      anything is written (`check_sources_first`): a file to download from a host within
      reach counts as found, and is left out of what is returned.
    sources: the files needed.
    manual_dir: the folder the user puts files in.
    allow_download: whether to try the network for files not in `manual_dir`.
    dataset: the dataset's name, for the message.
  Returns:
    filename -> local path (a file, or an unpacked folder).
  Raises:
    DatasetNotPreparedError: naming each missing file, its URL and size, and `manual_dir`.
    DataError: a folder stands where a source file (an archive, a text file) should be.
  """
  found, missing, reasons, hosts = {}, [], [], {}
  for s in sources:
    folder = os.path.join(manual_dir, s.filename)
    if os.path.isdir(folder):
      # Was: an archive's name taken as its unpacked folder (and the fix then named the whole
      # manual folder to delete), or an IsADirectoryError traceback for a text file's.
      raise _folder_at_source(folder, s.extracted, s.extracted_with)
    for candidate in (s.filename, s.extracted):
      path = os.path.join(manual_dir, candidate) if candidate else ""
      if candidate and os.path.exists(path):
        found[s.filename] = path
        break
    else:
      if allow_download:
        host = urllib.parse.urlsplit(s.url).netloc
        if host not in hosts:
          hosts[host] = unreachable(s.url)
        if hosts[host]:
          reasons.append(f"{s.filename}: {hosts[host]}")
          missing.append(s)
          continue
        if dl_manager is None:  # A look only: downloaded while preparing.
          continue
        try:
          found[s.filename] = os.fspath(dl_manager.download(s.url))
          continue
        except Exception as e:  # pylint: disable=broad-except
          # Offline, moved URL, proxy: all end in the same instructions.
          reasons.append(f"{s.filename}: {type(e).__name__}: {str(e)[:200]}")
      missing.append(s)
  if missing:
    why = ("Downloading failed (" + "; ".join(reasons) + ").\n") if reasons else (
        "Downloads are off (config.data.download=False).\n" if not allow_download else "")
    raise DatasetNotPreparedError(
        f"{dataset}: {len(missing)} source file(s) missing: "
        f"{', '.join(s.filename for s in missing)}.\n{why}"
        f"{instructions(missing, manual_dir)}\nThen run the same command again.")
  return found


def check_sources_first(data_dir: str, copies: Sequence[str], sources: Sequence[Source],
                        manual_dir: str, dataset: str, allow_download: bool = False,
                        locks: Sequence[str] = ()) -> None:
  """With none of `copies` (prepared-copy folders) there: refuses missing source files before
  the builder makes its folders (was: a run refused for them left empty folders, a lock file
  and TFDS's config record in data_dir; review finding). With downloads on, a missing file
  counts as missing where its host cannot be reached (`unreachable`; was: such a run, the
  default offline, still left data_dir, downloads/extracted/, the lock file and TFDS's
  config record behind; fault hunt). Where a copy's path or data_dir is something else (a
  file, a link to nothing), nothing is checked here: the preparation names that first.

  Nor where another process holds one of `locks` (`held_elsewhere`): it is preparing the
  copy, and `load` waits for it and reads what it made (was: refused at once where this
  process could not reach the host, a compute node without network while a login node
  prepares; review finding).

  Args:
    data_dir: the datasets' folder.
    copies: the folders a prepared copy would be in (any one will do).
    sources: the files preparing needs.
    manual_dir: the folder the user puts them in.
    dataset: the dataset's name, for the message.
    allow_download: whether the files missing from `manual_dir` may be downloaded.
    locks: the preparation locks of `copies` (`preparation_lock`).
  Raises:
    DatasetNotPreparedError: as `fetch_sources`, naming each missing file.
    DataError: a folder stands where a source file should be.
  """
  try:
    if not stat.S_ISDIR(os.stat(data_dir).st_mode):
      return
  except FileNotFoundError:
    pass  # Made by the preparation.
  except OSError:  # A link loop, a name too long: the preparation names it.
    return
  if any(os.path.lexists(c) for c in copies) or any(held_elsewhere(p) for p in locks):
    return
  fetch_sources(None, sources, manual_dir, allow_download, dataset)


def held_elsewhere(lock: str) -> bool:
  """Whether another holder has the lock file `lock` (`files.waiting_lock`) now: a look that
  takes a shared `flock` without waiting and lets it go at once. `flock` locks belong to an
  open file, so a lock this process holds through another open file counts too.

  Args:
    lock: the lock file's path.
  Returns:
    True where the look is refused; False where it is not, or the file is missing, is not
    a plain file, cannot be opened, or its file system has no locks.
  """
  return files.lock_held(lock)


# A prepared copy's metadata key: {filename: `_source_identity`} of the source files it was
# prepared from (LFW, CUB), compared with them at every later load (`_warn_changed_sources`).
SOURCES_KEY = "sources"
_WHOLE_FILE_BYTES = 64 << 20  # Files up to this size are hashed whole for their identity.


def _source_identity(path: str) -> dict:
  """What tells one version of a source file from another: its size and a SHA-256 of its
  bytes (all of them up to 64 MiB, so a corrected attribute table of the same size differs;
  of a larger archive, its first and last MiB). The time is left out: the same file copied
  or downloaded again is the same source.

  Args:
    path: the source: a file, or an unpacked folder standing in for an archive.
  Returns:
    {"path": its absolute path} plus, for a file, "size" and "sha256".
  """
  out = {"path": os.path.abspath(path)}
  if os.path.isfile(path):
    size, h = os.path.getsize(path), hashlib.sha256()
    with open(path, "rb") as f:
      if size <= _WHOLE_FILE_BYTES:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          h.update(chunk)
      else:
        h.update(f.read(_IDENTITY_BYTES))
        f.seek(size - _IDENTITY_BYTES)
        h.update(f.read(_IDENTITY_BYTES))
    out.update(size=size, sha256=h.hexdigest())
  return out


def _warn_changed_sources(meta: dict, manual_dir: str, where: str) -> None:
  """Warns where a prepared copy's source files have changed since it was prepared.

  The copy is prepared once and read after that; a source replaced since (a corrected
  lfw_attributes.txt after the first one dropped images, another archive) went unused
  without a word (fault hunt). Each source is compared where a new preparation would take
  it (`fetch_sources`: the manual folder first), else where it was taken from. A source
  that is gone, or an unpacked folder, is not compared; nor is anything for a copy prepared
  before its sources were recorded. A warning, not an error: the copy is what the runs made
  from it trained on, and a resume or `infer.py` of such a run must keep reading it (a review
  of the first version, which refused it: deleting the copy to go on would have resumed
  those runs on other attribute values).

  Args:
    meta: the copy's metadata (its `SOURCES_KEY` entry, from `BuilderMixin._record_sources`).
    manual_dir: the dataset's manual folder.
    where: the copy's folder, for the message.
  Returns:
    None; logs one warning per changed file, naming it, its sizes then and now, and what to
    delete to prepare a copy from it.
  """
  recorded = meta.get(SOURCES_KEY)
  if not isinstance(recorded, dict):
    return
  for name, then in sorted(recorded.items()):
    if not isinstance(then, dict) or "sha256" not in then:
      continue
    manual = os.path.join(manual_dir, name)
    path = manual if os.path.exists(manual) else str(then.get("path", ""))
    try:
      now = _source_identity(path) if os.path.isfile(path) else None
    except OSError:  # Unreadable now: a new preparation would say so; nothing to compare.
      now = None
    if now is None or (now["size"], now["sha256"]) == (then.get("size"), then["sha256"]):
      continue
    sizes = (f"{then.get('size')} bytes then, {now['size']} now"
             if now["size"] != then.get("size") else "the same size, other bytes")
    logging.warning(
        "%s is not the %s the prepared copy at %s was made from (%s); the copy is used as it "
        "was prepared. To prepare one from this file for new runs, delete %s (runs trained on "
        "the old copy would then stop where their held-out data changed, or resume on the new "
        "data where their dataset.json predates its content digests), or put the old file "
        "back.", path, name, where, sizes, where)


# How long `unreachable` waits for a connection.
CONNECT_TIMEOUT_S = 10.0


def unreachable(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Optional[str]:
  """Why the host of an http(s) `url` cannot be reached (its name does not resolve, or no
  connection opens within `timeout_s`), or None: it can, the URL is of another kind, or a
  proxy is set for it (the download then goes through the proxy, which is not tried here).

  TFDS's downloader retries a failed connection 10 times with waits that double up to 102 s,
  about 3.5 minutes per file, printing a warning line each time: offline, `train.py` on LFW
  took over a quarter of an hour to say which files to fetch by hand.

  Args:
    url: the source's address.
    timeout_s: how long to wait for the connection.
  Returns:
    One line saying what failed, or None.
  """
  parts = urllib.parse.urlsplit(url)
  if parts.scheme not in ("http", "https") or not parts.hostname:
    return None
  if parts.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(
      parts.hostname):
    return None
  port = parts.port or (443 if parts.scheme == "https" else 80)
  try:
    with socket.create_connection((parts.hostname, port), timeout=timeout_s):
      return None
  except OSError as e:
    return f"cannot reach {parts.hostname}:{port} ({e.strerror or e})"


def unpacked_dir(archive: str, dest_root: str) -> str:
  """The folder `unpack` unpacks `archive` into: `dest_root/<archive name>.d`.

  Args:
    archive: path of the archive.
    dest_root: where unpacked archives live.
  Returns:
    The folder's path (it may not exist yet).
  """
  return os.path.join(dest_root, os.path.basename(archive) + ".d")


def _archive_identity(archive: str) -> dict:
  """What tells one archive file from another without reading all of it: its size, its
  modification time and the SHA-256 of its first and last MiB (a replaced file of the same
  size and time still differs there)."""
  st = os.stat(archive)
  h = hashlib.sha256()
  with open(archive, "rb") as f:
    h.update(f.read(_IDENTITY_BYTES))
    if st.st_size > 2 * _IDENTITY_BYTES:
      f.seek(st.st_size - _IDENTITY_BYTES)
      h.update(f.read(_IDENTITY_BYTES))
  return {"archive": os.path.abspath(archive), "size": st.st_size,
          "mtime_ns": st.st_mtime_ns, "head_tail_sha256": h.hexdigest()}


def _read_marker(folder: str) -> Optional[dict]:
  """The identity recorded in an unpacked folder's marker, or None (none, or unreadable)."""
  try:
    with open(os.path.join(folder, UNPACKED_MARKER), encoding="utf-8") as f:
      marker = json.load(f)
    return marker if isinstance(marker, dict) else None
  except (OSError, ValueError):
    return None


def _same_archive(recorded: Optional[dict], current: dict) -> bool:
  # The path is left out: the same file moved from downloads/ to the manual folder is the
  # same archive.
  keys = ("size", "mtime_ns", "head_tail_sha256")
  return recorded is not None and all(recorded.get(k) == current[k] for k in keys)


_ARCHIVE_SUFFIXES = (".tgz", ".tar", ".tar.gz", ".tar.bz2", ".tar.xz")


def _folder_at_source(path: str, extracted: Optional[str], extracted_with: str = ""
                      ) -> DataError:
  """The error for a folder where the source file `path` should be (an archive where
  `extracted`, its unpacked folder's name, is given or `path` is named like one; with
  `extracted_with`, the file from the archive's root that goes beside that folder)."""
  archive = bool(extracted) or path.endswith(_ARCHIVE_SUFFIXES)
  beside = f" with {extracted_with} beside it" if extracted and extracted_with else ""
  alt = f" (or its unpacked {extracted}/ folder{beside})" if extracted else ""
  return DataError(f"{path} is a folder, not the {'archive' if archive else 'file'}; remove it "
                   f"and put the downloaded {os.path.basename(path)} there{alt}, then run the "
                   "same command again.")


def unpack(archive: str, dest_root: str, progress: bool = True, url: str = "") -> str:
  """Unpacks a .tgz/.tar into `dest_root/<archive name>.d/` and returns that folder.

  For an already unpacked folder (a manual folder may hold one instead of the archive),
  nothing is unpacked: the folder holding it plays the archive's root. Where that folder
  holds a folder of its own name and no other folder, only files beside it (unpacked one
  level too deep, as `tar xf` inside a folder made for it does: `X/X/...`, with the files
  from the archive's root such as CUB's attributes.txt), the outer one plays the root and
  the inner one is read (`_unpacked_too_deep`).

  An archive is unpacked again unless the folder's marker (`UNPACKED_MARKER`) records this
  very file (size, modification time, first and last MiB): replacing a wrong or
  damaged archive with the right one is enough. Unpacking goes to a temporary folder that gets
  the marker last and is renamed at the end, so an interrupted run never leaves a
  half-unpacked tree that is trusted.

  Args:
    archive: path of the archive or of an unpacked folder.
    dest_root: where unpacked archives live.
    progress: show a progress bar over the archive's members.
    url: where the archive is published, for the message of a file that is no tar archive.
  Returns:
    The folder holding the archive's contents.
  Raises:
    DataError: the archive cannot be unpacked (damaged or incomplete), the file is not a tar
      archive at all (an empty file, a web page, a zip), or a folder stands at an archive's
      name (e.g. "x.tgz").
  """
  if os.path.isdir(archive):
    if archive.endswith(_ARCHIVE_SUFFIXES):
      # Was: a folder named like the archive taken as unpacked (its parent, the manual folder,
      # then named as the thing to delete). `fetch_sources` refuses it first.
      raise _folder_at_source(archive, "")
    folder = os.path.abspath(archive)
    if _unpacked_too_deep(folder):
      # Unpacked one level too deep (X/X/...): was told to delete X and put the archive in
      # its place, which a second unpacking by hand nested again (fault hunt).
      return folder
    # A folder named like the archive's top-level directory: its parent plays the root.
    return os.path.dirname(folder)
  dest = unpacked_dir(archive, dest_root)
  # One process at a time per archive (was: two runs started together shared the temporary
  # folder, and one's swap left the other's half-unpacked tree, marked finished).
  if os.path.isdir(dest) and _same_archive(_read_marker(dest), _archive_identity(archive)):
    return dest  # Unpacked before: read without the lock (a read-only data_dir too).
  lock = os.path.join(dest_root, f".{os.path.basename(dest)}.lock")
  with files.waiting_lock(lock, f"unpacking {os.path.basename(archive)}"):
    return _unpack_locked(archive, dest, dest_root, progress, url)


def _unpacked_too_deep(folder: str) -> bool:
  """Whether the unpacked `folder` (X) is a wrapper around the archive's top folder (X/X):
  it holds a folder of its own name and no other folder, only files beside it (those of the
  archive's root); hidden entries are not counted. Was: any X/X, so a whole X holding a stray
  (say empty) X of its own went unread, and the message said to delete X (review finding)."""
  name = os.path.basename(folder)
  try:
    others = [e for e in os.listdir(folder) if e != name and not e.startswith(".")]
  except OSError:  # Read by the builder, which names what it cannot read.
    return False
  return os.path.isdir(os.path.join(folder, name)) and not any(
      os.path.isdir(os.path.join(folder, e)) for e in others)


# The first bytes of the compressed streams `tarfile` reads (gzip, bzip2, xz), and where a tar
# header says "ustar": a file with neither is no tar archive at all.
_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")
_TAR_MAGIC_AT = 257


def _looks_like_a_tar(archive: str) -> bool:
  """Whether `archive` starts as a compressed stream or holds a tar header's "ustar" mark (a
  damaged archive does; an HTML page, an empty file or a zip does not)."""
  try:
    with open(archive, "rb") as f:
      head = f.read(_TAR_MAGIC_AT + 8)
  except OSError:
    return True  # Said by the unpacking's own error.
  return head.startswith(_ARCHIVE_MAGIC) or head[_TAR_MAGIC_AT:_TAR_MAGIC_AT + 5] == b"ustar"


def _unpack_locked(archive: str, dest: str, dest_root: str, progress: bool, url: str) -> str:
  """`unpack`'s work, under the archive's lock."""
  name = os.path.basename(archive)
  identity = _archive_identity(archive)
  stale = dest + ".stale"
  shutil.rmtree(stale, ignore_errors=True)  # Left by a run stopped while swapping folders.
  if os.path.isdir(dest):
    if _same_archive(_read_marker(dest), identity):
      return dest
    logging.info("%s is not the archive %s was unpacked from (or that is unknown); unpacking "
                 "it again", archive, dest)
  os.makedirs(dest_root, exist_ok=True)
  tmp = dest + ".incomplete"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    with tarfile.open(archive) as tar:
      members = tar.getmembers()
      if progress:
        members = bars.bar(members, desc=f"unpacking {name}", unit=" files")
      for m in members:
        # The 'data' filter (Python >= 3.11.4) refuses absolute paths and links outside.
        if hasattr(tarfile, "data_filter"):
          tar.extract(m, tmp, filter="data")
        else:
          tar.extract(m, tmp)  # noqa: S202
      # tarfile stops at the end-of-archive blocks, before a compressed stream's trailer:
      # reading on to the end has gzip (bz2, xz) check its CRC (was: a flipped byte unpacked
      # and trusted, an image 95 levels off).
      while tar.fileobj.read(1 << 20):
        pass
  except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # zlib's: other damage.
    shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(e, OSError) and files.storage_error(e) is not None:
      raise  # A full disk or permissions: load_dataset says so, the archive is fine.
    source = f" from {url}" if url else ""
    if isinstance(e, tarfile.ReadError) and not _looks_like_a_tar(archive):
      # Was tarfile's four-line "file could not be opened successfully" in the message.
      raise DataError(f"{archive} is not a tar archive (an empty file, a web page or a "
                      f"zip?): delete it and download it again{source}.") from None
    why = (str(e).strip().splitlines() or [type(e).__name__])[0]  # One line.
    raise DataError(f"could not unpack {archive} ({why}); the file is damaged or incomplete. "
                    f"Delete it and download it again{source}.") from e
  # The marker goes in last: a folder without it is never trusted.
  files.atomic_write(os.path.join(tmp, UNPACKED_MARKER), json.dumps(identity))
  # A folder, so not files.atomic_path (which renames one file); a non-empty folder cannot
  # be replaced in one rename, so the old one steps aside first.
  if os.path.isdir(dest):
    os.replace(dest, stale)
  os.replace(tmp, dest)
  shutil.rmtree(stale, ignore_errors=True)
  return dest


def redownload(source: Source, inside: str) -> str:
  """The fix for an archive found damaged or wrong after unpacking, naming its unpacked folder.

  Args:
    source: the archive (its file name for the message; its `extracted` folder name, so that
      a manual folder holding that folder instead of the archive is never named whole).
    inside: any path inside the folder it was unpacked to (or inside the unpacked folder a
      manual folder holds instead of the archive).
  Returns:
    A sentence ending the `DataError`: which files to delete (the archive's own path and its
    `<archive>.d` folder when `unpack` made it), and to download it again.
  """
  # Was: the unpacked folder's name looked up in a map `fetch_sources` filled, so a call
  # without a fetch before it in the process named the whole manual folder to delete.
  archive = source.filename
  folder = os.path.abspath(inside)
  while True:
    marker = _read_marker(folder) if folder.endswith(".d") else None
    if marker is not None:
      return (f"delete {marker.get('archive', archive)} and its unpacked folder {folder}, "
              f"then download {archive} again.")
    parent = os.path.dirname(folder)
    if parent == folder:  # Not unpacked here: a manual folder holds the unpacked folder.
      return _replace_unpacked(archive, source.extracted, os.path.abspath(inside))
    folder = parent


def _replace_unpacked(archive: str, extracted: str, inside: str) -> str:
  """`redownload`'s fix for an archive a manual folder holds unpacked: delete that unpacked
  folder (the nearest one named `extracted` above `inside`; of one unpacked a level too
  deep, `X/X`, the outer one), never the manual folder holding it (was: named whole where
  `inside` was that folder; and the inner one of `X/X`, the archive then to go in `X`,
  where a second unpacking nested it again)."""
  if (extracted and os.path.basename(inside) != extracted
      and os.path.isdir(os.path.join(inside, extracted))):  # The manual folder.
    return (f"put a fresh download of {archive} in {inside} instead of its unpacked "
            f"{extracted}/ folder (delete that folder).")
  folder = inside
  while extracted and folder and os.path.basename(folder) != extracted:
    parent = os.path.dirname(folder)
    folder = parent if parent != folder else ""
  while extracted and folder and os.path.basename(os.path.dirname(folder)) == extracted:
    folder = os.path.dirname(folder)  # X/X: the outer X.
  folder = folder or inside  # No folder of that name above: `inside`.
  return (f"delete the folder {folder} and put a fresh download of {archive} in "
          f"{os.path.dirname(folder)} instead.")


def find_file(root: str, relative: str, source: Source) -> str:
  """`root/relative`, or a `DataError` naming the path the archive should have held.

  Args:
    root: the folder of an unpacked archive.
    relative: the path expected inside it ("/"-separated).
    source: the archive, for the message (`redownload`).
  Returns:
    os.path.join(root, relative), which exists.
  Raises:
    DataError: it does not exist (the message says which files to delete, `redownload`).
  """
  path = os.path.join(root, relative)
  if not os.path.exists(path):
    raise DataError(f"{source.filename}: expected {relative} under {root}, but it is not "
                    f"there; the archive is not the published one (or is incomplete): "
                    f"{redownload(source, root)}")
  return path


def read_source_image(path: str, mode: str, fix: Union[str, Callable[[], str]]) -> Any:
  """Opens an image of an unpacked source archive, converted to `mode`; damage is a DataError.

  Args:
    path: the image file.
    mode: the PIL mode to convert to ("RGB", "L").
    fix: the sentence that ends the error (`redownload`), or a function that returns it
      (called only on failure, so that a loop over many images does not build it each time).
  Returns:
    The decoded PIL image in `mode`.
  Raises:
    DataError: the file is missing, truncated (also where PIL's `LOAD_TRUNCATED_IMAGES` is
      set) or not an image PIL can read, naming it.
    OSError: it cannot be read for a reason outside its bytes (`files.storage_error`:
      permissions, the disk), for `load_dataset` to report.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  fix_text = fix if isinstance(fix, str) else None
  if not os.path.isfile(path):
    raise DataError(f"{path} is not there; the archive is incomplete: {fix_text or fix()}")
  try:
    # Was: where the flag was set (a notebook; TFDS's thumbnails set it), a truncated image
    # or mask was filled with grey, prepared and sealed with checksums (fault hunt).
    with truncated_refused(), Image.open(path) as im:
      return im.convert(mode)
  except MemoryError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # PIL's decoders raise many types for damaged files (OSError, SyntaxError, ...).
    if isinstance(e, OSError) and files.storage_error(e) is not None:
      raise
    raise DataError(f"{path} could not be decoded ({type(e).__name__}: {e}); the file is "
                    f"damaged or incomplete: {fix_text or fix()}") from None


def decode_text(raw: bytes) -> tuple[str, str]:
  """Decodes a text file's bytes: UTF-8 (with or without a BOM), UTF-16 with a BOM (Excel's
  "Unicode text"), else Windows-1252, else Latin-1 (which decodes any bytes).

  Args:
    raw: the file's bytes.
  Returns:
    (text without a BOM, the encoding used: "utf-8", "utf-16", "cp1252" or "latin-1").
  """
  if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
    try:
      return raw.decode("utf-16"), "utf-16"
    except UnicodeDecodeError:
      pass
  for encoding, codec in (("utf-8", "utf-8-sig"), ("cp1252", "cp1252")):
    try:
      return raw.decode(codec), encoding
    except UnicodeDecodeError:
      pass
  return raw.decode("latin-1"), "latin-1"


def numbered_lines(path: str) -> list[tuple[int, str]]:
  """The non-empty lines of a text file with their line numbers (decoded by `decode_text`).

  Lines end at a line feed only (a carriage return before it is dropped too), so the
  characters that Python's `str.splitlines` also breaks at (form feed, U+0085, U+2028, ...)
  stay inside the line.

  Args:
    path: the text file.
  Returns:
    (line number from 1, counting every line of the file, the line without its ending) per
    line, in order; lines holding only whitespace are left out, other lines keep their
    leading and trailing spaces and tabs.
  """
  with open(path, "rb") as f:
    text, _ = decode_text(f.read())
  out = []
  for number, line in enumerate(text.split("\n"), 1):
    if line.endswith("\r"):
      line = line[:-1]
    if line.strip():
      out.append((number, line))
  return out


def read_lines(path: str) -> list[str]:
  """The non-empty lines of a text file (decoded by `decode_text`).

  Lines end at a line feed only, as in `numbered_lines`.

  Args:
    path: the text file.
  Returns:
    Its lines in order, without line endings (LF or CR LF); lines holding only
    whitespace are dropped, other lines keep their leading and trailing spaces and tabs.
  """
  return [line for _, line in numbered_lines(path)]


def crop_resize(image: Any, box: Sequence[float], size: int) -> Any:
  """Crops `box` (left, top, right, bottom; floats allowed) and resizes to size x size.

  PIL's bilinear filter widens its support when it shrinks, so downscaling weighs the source
  area with a triangle (Torch's `image.scale`, the reference's, averages it evenly, in floats,
  so the pixels differ slightly), rather than sampling it.

  Args:
    image: a PIL image of any mode (RGB images and mode-L masks alike).
    box: (left, top, right, bottom) in source pixels; fractional values crop sub-pixel
      regions rather than rounding.
    size: S, the output side.
  Returns:
    A PIL image of the same mode, S x S.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  return image.resize((size, size), Image.BILINEAR, box=tuple(float(b) for b in box))


def resize_array(images: np.ndarray, size: int) -> np.ndarray:
  """Resizes uint8 [N, H, W, C] or [N, H, W] images to size x size (PIL bilinear).

  Args:
    images: uint8 [N, H, W, C] with C = 1, 3 or 4, or [N, H, W] masks. H != W stretches.
    size: S, the output side.
  Returns:
    A new uint8 array [N, S, S, C] or [N, S, S] (a copy even when H == W == S, so writing
    to it never changes `images`).
  Raises:
    DataError: `images` is not 3- or 4-dimensional with C in (1, 3, 4).
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
    raise DataError(f"resize_array takes [N, H, W] or [N, H, W, C] images with C = 1, 3 or "
                    f"4; got shape {images.shape}.")
  if images.shape[1] == size and images.shape[2] == size:
    return np.array(images, np.uint8)
  out = np.empty((images.shape[0], size, size) + images.shape[3:], np.uint8)
  # PIL reads a single channel as [H, W] (mode L), not [H, W, 1].
  flat = images[..., 0] if images.ndim == 4 and images.shape[3] == 1 else images
  target = out[..., 0] if flat is not images else out
  for i, im in enumerate(flat):
    target[i] = np.asarray(Image.fromarray(np.asarray(im, np.uint8)).resize(
        (size, size), Image.BILINEAR))
  return out


def fingerprint(parts: Iterable[Any]) -> str:
  """A short stable hash of the given values (their repr).

  Args:
    parts: values whose repr is the same from run to run (bytes, strings, numbers, and
      lists or tuples of them).
  Returns:
    12 hex digits: the start of the SHA-256 of the reprs, each followed by a NUL byte.
  """
  h = hashlib.sha256()
  for p in parts:
    h.update(repr(p).encode())
    h.update(b"\0")
  return h.hexdigest()[:12]


def feature_dict(tfds: Any, image_size: int, num_attributes: int, masks: bool,
                 extra: Optional[dict] = None) -> Any:
  """The features every builder writes: the same arrays `Split` holds, plus an id.

  Args:
    tfds: the `tensorflow_datasets` module (from `import_tfds`).
    image_size: S, the side of the stored images.
    num_attributes: A, the length of the attribute vectors.
    masks: add the `mask` and `mask_predicted` features.
    extra: more features by name (e.g. CUB's `attributes_class`); on a name clash they
      replace the standard ones.
  Returns:
    A `tfds.features.FeaturesDict`: `id` (text), `image` (uint8 [S, S, 3]), `attributes`
    (float32 [A]) and, with masks, `mask` (uint8 [S, S, 1]) and `mask_predicted` (bool).
  """
  f = {
      "id": tfds.features.Text(),
      "image": tfds.features.Image(shape=(image_size, image_size, 3)),
      "attributes": tfds.features.Tensor(shape=(num_attributes,), dtype=np.float32),
  }
  if masks:
    f["mask"] = tfds.features.Image(shape=(image_size, image_size, 1))
    f["mask_predicted"] = tfds.features.Tensor(shape=(), dtype=np.bool_)
  f.update(extra or {})
  return tfds.features.FeaturesDict(f)


def pil_mask(mask: np.ndarray) -> Any:
  """uint8 [H, W] to the single-channel PIL image the Image feature encodes.

  Args:
    mask: uint8 [H, W], 255 = foreground. Other dtypes are cast to uint8 without scaling,
      so bool or [0, 1] float masks must be multiplied by 255 first.
  Returns:
    A mode-L PIL image, H x W.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  return Image.fromarray(np.ascontiguousarray(mask, np.uint8), mode="L")


def dataset_info(tfds: Any, **kwargs: Any) -> Any:
  """`tfds.core.DatasetInfo(**kwargs)`, for a builder's `_info`, less TFDS's look on its own
  bucket of prepared datasets.

  A builder whose copy is not prepared yet asks its info to `initialize_from_bucket`, which
  makes a temporary folder (`tempfile.mkdtemp("tfds")`) for files to fetch, returns at once
  while TFDS's bucket is switched off (its default) or does not hold the dataset, and never
  removes the folder: an empty `/tmp/tmp...tfds` is left behind every time a builder is opened
  before its copy is prepared. These datasets are never on that bucket, so the look is skipped.

  Args:
    tfds: the `tensorflow_datasets` module (from `import_tfds`).
    **kwargs: `tfds.core.DatasetInfo`'s arguments.
  Returns:
    The `DatasetInfo`.
  """
  return _local_info_class(tfds)(**kwargs)


@functools.cache
def _local_info_class(tfds: Any) -> type:
  """`dataset_info`'s subclass of `tfds.core.DatasetInfo`, made once TFDS is imported."""

  class LocalDatasetInfo(tfds.core.DatasetInfo):
    """A `DatasetInfo` that never looks for its dataset on TFDS's bucket (`dataset_info`)."""

    def initialize_from_bucket(self) -> None:
      """Nothing: the dataset is not on TFDS's bucket."""
  return LocalDatasetInfo


class BuilderMixin:
  """Put before `tfds.core.GeneratorBasedBuilder` in a builder's bases.

  Adds the keyword arguments every builder here takes, and turns off TFDS's search for a
  checksums file beside the builder's code: there is none, and the search imports
  `importlib_resources`, which tensorflow-datasets only declares for Python < 3.9.
  """
  code_path = None

  def __init__(self, *, manual_dir: str = "", allow_download: bool = True,
               progress: bool = True, **kwargs: Any):
    self._manual_dir = manual_dir
    self._allow_download = allow_download
    self._progress = progress
    super().__init__(**kwargs)

  def _record_sources(self, paths: dict[str, str]) -> None:
    """Records in the copy's metadata the source files it is prepared from
    (`fetch_sources`' filename -> path), for `load` to compare with them later."""
    self.info.metadata[SOURCES_KEY] = {name: _source_identity(path)
                                       for name, path in paths.items()}


def damaged(where: str, why: str) -> DataError:
  """The error for a prepared copy that cannot be read as it was written.

  Args:
    where: the copy's folder.
    why: what is wrong, in a few words.
  Returns:
    A `DataError` saying to delete the folder, so that the next run prepares it again.
  """
  return DataError(f"the prepared copy of the dataset at {where} is damaged ({why}); delete "
                   "that folder and run the same command again to prepare it anew.")


def _cannot_read(where: str, error: OSError) -> DataError:
  """The error for a prepared copy that cannot be read for a reason outside its bytes
  (`files.storage_error`: permissions, a failed disk), with its errno's advice
  (`files.storage_fix`; was "make it readable" for each, a failed disk's EIO too)."""
  return DataError(f"could not read the prepared copy of the dataset at {where} "
                   f"({files.describe_storage_error(error)}); {files.storage_fix(error)}, "
                   "then run the same command again.")


@contextlib.contextmanager
def damage_is_an_error(where: str) -> Any:
  """Turns a failure inside the block into `damaged`, but this project's own errors and
  `MemoryError` (raised as they are) and permission or disk errors (`files.storage_error`: a
  `DataError` with the advice of its errno, `files.storage_fix`).

  For code that reads a copy already prepared: TFDS, ArrayRecord and PIL then fail with
  their own exceptions (a JSON or protobuf parse error, "Corrupted Riegeli/records file",
  a missing file, an image PIL cannot identify), all of which mean the copy is damaged.

  Args:
    where: the copy's folder, for the message.
  Yields:
    Nothing.
  Raises:
    DataError: from `damaged`, naming the original exception's type and first line.
  """
  try:
    yield
  except (A2IError, MemoryError):  # Not the copy's fault.
    raise
  except Exception as e:  # pylint: disable=broad-except
    stored = files.storage_error(e)  # Permissions or the disk, not the bytes.
    if stored is not None:
      raise _cannot_read(where, stored) from None
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    raise damaged(where, f"{type(e).__name__}: {first}" if first else type(e).__name__
                  ) from None


def check_utf8_path(path: str, key: str = "data.data_dir") -> None:
  """Refuses a folder whose path cannot be written as UTF-8 (`files.is_utf8_path`: bytes such as
  `caf\\xe9`, or a non-ASCII name under a locale that is not UTF-8): the ArrayRecord writer
  takes UTF-8 paths only, and stopped with a traceback once the copy's folders and lock file
  were made (review finding, fault hunt). Writes nothing.

  Args:
    path: the folder the prepared copies go in.
    key: its config key, for the message.
  Raises:
    DataError: naming the key, the path (escaped) and the fix.
  """
  refused = files.utf8_refusal(os.fsdecode(path), "prepared datasets are written with a "
                               "writer (ArrayRecord) that takes UTF-8 paths only")
  if refused is not None:
    raise DataError(f"config.{key}={refused[:-1]}, or pass --config.{key}=<another folder>.")


def check_home(path: str, key: str, fix: Optional[str] = None) -> str:
  """`path` with `~` expanded, or a `DataError` where it cannot be (`files.no_home`: HOME
  unset and this user not in the password database, as a container's arbitrary user; was a
  folder named "~" made in the working folder, the data put there; fault hunt).

  Args:
    path: a data folder setting as written (config.data.data_dir's default "~/a2i_data").
    key: its config key, for the message ("data.data_dir").
    fix: what to do besides setting HOME; None: "pass --config.KEY=<an absolute folder>"
      (`data.check_folder` names a run's config.json instead where that sets it).
  Returns:
    The path, `~` expanded.
  Raises:
    DataError: naming the key, why, and the fix.
  """
  why = files.no_home(path)
  if why is not None:
    fix = f"pass --config.{key}=<an absolute folder>" if fix is None else fix
    raise DataError(f"config.{key}={shown_path(path)} cannot be found ({why}); set HOME, or "
                    f"{fix}.")
  return os.path.expanduser(path)


def data_dir_path(data_dir: str, key: str = "data.data_dir") -> str:
  """`data_dir` with `~` expanded (`check_home`), checked as a place for prepared copies
  (`check_utf8_path`): the first lines of each source's `load`. Writes nothing.

  Args:
    data_dir: the folder the prepared copies go in, as written.
    key: its config key, for the messages.
  Returns:
    The path, `~` expanded.
  Raises:
    DataError: `~` cannot be expanded, or the path cannot be written as UTF-8.
  """
  data_dir = check_home(data_dir, key)
  check_utf8_path(data_dir, key)
  return data_dir


def open_builder(builder_class: Any, *, data_dir: str, config: Optional[str] = None,
                 **kwargs: Any) -> Any:
  """`builder_class(data_dir=..., config=..., file_format="array_record", **kwargs)`, where a
  damaged prepared copy (TFDS reads its dataset_info.json in the constructor) is one
  `DataError`.

  Args:
    builder_class: an `a2i_jax` builder class.
    data_dir: TFDS's data_dir for it.
    config: the builder config's name, if the builder has configs.
    **kwargs: the builder's other arguments.
  Returns:
    The builder.
  Raises:
    DataError: the prepared copy's metadata cannot be read, or `data_dir` is not valid
      UTF-8 (`check_utf8_path`).
  """
  check_utf8_path(data_dir)  # Before TFDS makes a folder (its writer's paths).
  where = os.path.join(data_dir, builder_class.name, config or "",
                       str(builder_class.VERSION))
  guard = damage_is_an_error(where) if os.path.isdir(where) else contextlib.nullcontext()
  if config is not None:
    kwargs["config"] = config
  with guard, quiet_tfds():
    return builder_class(data_dir=data_dir, file_format="array_record", **kwargs)


def _check_copy(where: str) -> bool:
  """Compares a prepared copy with its checksum file; False when it has none yet."""
  try:
    expected = files.read_digests(os.path.join(where, CHECKSUM_FILE))
  except ValueError:
    raise damaged(where, f"its checksum file {CHECKSUM_FILE} is unreadable") from None
  except OSError as e:  # Permissions or the disk: not the copy's bytes.
    raise _cannot_read(where, e) from None
  if expected is None:
    return False
  problem = files.compare_digests(expected, files.file_digests(where, CHECKSUM_FILE),
                                  "prepared")
  if problem:
    raise damaged(where, problem)
  return True


def _check_names_fit(where: str, names: Sequence[str], width: int) -> None:
  """Refuses a copy whose metadata names no attributes, or another number than its vectors
  hold. Was: a copy without checksums (an older version's, a stop before they were written, a
  read-only data_dir) that had lost its metadata.json read with 0 names for vectors of 73, and
  then sealed as checked; a copy sealed so is refused too."""
  if not names or len(names) != width:
    raise damaged(where, f"its metadata names {len(names)} attributes, its vectors hold "
                  f"{width}")


def _write_checksums(where: str) -> None:
  """Writes the copy's checksum file; a read-only data_dir is left without one."""
  try:
    files.write_digests(os.path.join(where, CHECKSUM_FILE),
                        files.file_digests(where, CHECKSUM_FILE))
  except OSError as e:
    logging.warning("could not write checksums into %s (%s); its damage will not be detected",
                    where, e.strerror or e)


class _QuietTfdsFilter(std_logging.Filter):
  """Drops TFDS's INFO lines ("Generating dataset ...", "Done writing ..."), its advice to
  install OpenCV (PIL decodes the images; the speed does not matter for a one-off read), and
  its "Variant folder ... has no dataset_info.json" from a look at a copy not prepared yet
  (LFW's look for its masks copy printed it on a first start; the project says itself what is
  unprepared or damaged)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if f"{os.sep}tensorflow_datasets{os.sep}" not in record.pathname:
      return True
    message = record.getMessage()
    return (record.levelno >= std_logging.WARNING and "OpenCV is not installed" not in message
            and not message.startswith("Variant folder "))


@contextlib.contextmanager
def quiet_tfds() -> Any:
  """Keeps TFDS's own console output out of the block: its progress bars
  (`tfds.display_progress_bar`), its absl INFO lines, and the lines it prints to stdout
  ("Downloading and preparing dataset ...", "Dataset ... downloaded and prepared to ...").
  The project's own lines stay; with absl's verbosity at debug (--verbosity=1) nothing is
  hidden.

  Yields:
    Nothing.
  """
  if logging.get_verbosity() >= logging.DEBUG:
    yield
    return
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=import-outside-toplevel
  tfds = import_tfds()
  shown = getattr(tqdm_utils, "_active", True)  # Private: TFDS has no getter for it.
  tfds.display_progress_bar(False)
  noise = _QuietTfdsFilter()
  absl_logger = std_logging.getLogger("absl")
  absl_logger.addFilter(noise)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    absl_logger.removeFilter(noise)
    tfds.display_progress_bar(shown)


def prepare(builder: Any, manual_dir: str, download_dir: str) -> None:
  """Runs `download_and_prepare` (a no-op once the dataset is prepared).

  Args:
    builder: an `a2i_jax` builder (a `BuilderMixin` GeneratorBasedBuilder).
    manual_dir: the folder of manually downloaded source files (TFDS's `manual_dir`).
    download_dir: where TFDS puts downloads and the builders unpack archives.
  Raises:
    DatasetNotPreparedError / DataError: from the builder: source files missing, damaged
      or not the published ones.
  """
  tfds = import_tfds()
  with _sorted_in_memory():
    builder.download_and_prepare(
        download_dir=download_dir,
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


@contextlib.contextmanager
def _sorted_in_memory() -> Any:
  """TFDS sorts a split's examples in memory up to 1000 MiB of them and on disk past that, in
  files written with `tf.io.gfile`: without TensorFlow a larger split (a folder of CelebA's
  size) ended in "No module named 'tensorflow'", a traceback, once every image was encoded
  (fault hunt). Training holds the splits in memory whole anyway, decoded, so inside this
  block they are sorted there at any size. (A TFDS without that bound is left as it is.)"""
  from tensorflow_datasets.core import shuffle  # pylint: disable=import-outside-toplevel
  bound = getattr(shuffle, "MAX_MEM_BUFFER_SIZE", None)
  if bound is None:
    yield
    return
  shuffle.MAX_MEM_BUFFER_SIZE = sys.maxsize
  try:
    yield
  finally:
    shuffle.MAX_MEM_BUFFER_SIZE = bound


def remove_unfinished(where: str) -> None:
  """Removes the unfinished copies a killed preparation left beside the copy `where`.

  TFDS prepares a copy in `incomplete.<6 random letters and digits>_<version>/` beside its
  version folder and renames it into place when done; an exception (Ctrl-C too) removes it,
  but a killed process (SIGKILL, the machine stopping) leaves it there, and no later attempt
  reuses it: one folder of a dataset's size per kill (review finding). Only the folders of
  this version's form are removed, never the copy itself nor other versions' folders.

  Call it only while holding the preparation's lock (`load` does): another process
  preparing the same copy holds that lock, so its unfinished folder is never removed while it
  writes there. Where the lock cannot be taken (`files.waiting_lock` yields False), nothing
  is removed.

  Args:
    where: the copy's folder, `<data_dir>/<name>/[<config>/]<version>`.
  """
  parent = os.path.dirname(os.path.normpath(where))
  removed = []
  for name in _unfinished(where):
    shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    if not os.path.exists(os.path.join(parent, name)):  # A read-only data_dir keeps it.
      removed.append(name)
  if removed:
    logging.info("removed %d unfinished copy(ies) a stopped preparation left in %s (e.g. %s)",
                 len(removed), parent, removed[0])


def _unfinished(where: str) -> list[str]:
  """The names of TFDS's unfinished copies of `where`'s version beside it (`remove_unfinished`)."""
  parent, version = os.path.split(os.path.normpath(where))
  try:
    entries = os.listdir(parent)
  except OSError:  # Not made yet: nothing left behind.
    return []
  form = re.compile(r"incomplete\.[A-Za-z0-9]+_" + re.escape(version))
  return sorted(e for e in entries
                if form.fullmatch(e) and os.path.isdir(os.path.join(parent, e)))


def read_split(builder: Any, split: str, attribute_key: str = "attributes",
               chunk: int = 1024, progress: bool = False,
               ids: Optional[list] = None) -> Split:
  """Reads one prepared split into host memory, in the order it was written.

  Args:
    builder: a prepared builder.
    split: "train", "validation" or "test".
    attribute_key: which feature holds the attribute vectors.
    chunk: examples decoded per call.
    progress: show a progress bar.
    ids: a list that gets every example's `id` feature (bytes), in order; None: not kept.
      (Each example is decoded whole anyway, so they cost nothing more.)
  Returns:
    The `Split` (masks and mask_predicted where the builder wrote them).
  """
  source = builder.as_data_source(split=split)
  n = len(source)
  if n == 0:
    raise DataError(f"{builder.name}: the prepared {split!r} split is empty.")
  has_masks = "mask" in builder.info.features
  shape = builder.info.features["image"].shape
  images = np.empty((n,) + tuple(shape), np.uint8)
  attrs = np.empty((n,) + tuple(builder.info.features[attribute_key].shape), np.float32)
  masks = np.empty((n,) + tuple(shape[:2]), np.uint8) if has_masks else None
  predicted = np.empty((n,), bool) if has_masks else None
  starts = range(0, n, chunk)
  if progress:
    starts = bars.bar(starts, desc=f"reading {builder.name} {split}", unit=" chunks")
  for start in starts:
    idx = list(range(start, min(n, start + chunk)))
    for i, ex in zip(idx, source.__getitems__(idx)):
      images[i] = ex["image"]
      attrs[i] = ex[attribute_key]
      if ids is not None:
        ids.append(ex["id"])
      if has_masks:
        masks[i] = ex["mask"][..., 0]
        predicted[i] = ex["mask_predicted"]
  return Split(images=images, attributes=attrs, masks=masks, mask_predicted=predicted)


def preparation_lock(where: str, name: str) -> str:
  """The lock file held while the copy `where` is prepared (`load`).

  It sits two levels above the version folder, whose siblings TFDS reads as versions.

  Args:
    where: the copy's folder, `<data_dir>/<name>/[<config>/]<version>`.
    name: the builder's name.
  Returns:
    The lock file's path.
  """
  return os.path.join(os.path.dirname(os.path.dirname(where)),
                      f".{name}-{os.path.basename(where)}.lock")


def discard_attempts(folder: str, where: str, name: str, lock_held: bool = False) -> None:
  """Removes `folder`, which holds the copy `where` of the builder `name`, with what stopped
  attempts to prepare that copy left in it: for a file of the source that stops every
  attempt on the same files (a `DataError`). Never a finished copy (`where` there), and only
  under the preparation's lock (`preparation_lock`), so that no other process prepares in it
  meanwhile. The one removal of `load`'s `discard_on_data_error` and of a caller that refuses
  the source before `load` (`folder.load`'s reading of the images).

  Args:
    folder: the folder to remove ("" or a missing one: nothing to do).
    where: the copy's folder (the builder's data_dir), inside `folder`.
    name: the builder's name.
    lock_held: whether the caller is inside the preparation's `files.waiting_lock` block
      (`load`; removed there also where the file system has no locks). False: the lock is
      taken here, and nothing is removed where it cannot be.
  """
  if not folder or not os.path.isdir(folder):
    return
  if not lock_held:
    with files.waiting_lock(preparation_lock(where, name), f"preparing {name}") as locked:
      if locked:
        discard_attempts(folder, where, name, lock_held=True)
    return
  if not os.path.lexists(where):
    shutil.rmtree(folder, ignore_errors=True)


def _made_by_preparing(builder: Any, where: str, download_dir: str, lock: str
                       ) -> Callable[[], None]:
  """What preparing the copy `where` would make that is not there now, and a function that
  takes it back (`load`, where preparing fails): the lock file `lock` and TFDS's record of
  the builder's configs (`<name>/.config/metadata.json`) where they are not there now, then
  the folders made for them, for the copy and for TFDS's `<download_dir>/extracted`, each
  while it is empty. Nothing that is there now is taken back.

  Nor what another process may have made meanwhile, or needs: the config record is kept
  where a folder of any config holds a copy, finished or under way (another run, waiting
  on the same lock or preparing another version, wrote it: `_copies_beside`), and the
  downloads folders, shared by every dataset of the data_dir, where another dataset's
  preparation holds its lock (`_other_preparation`). (Was: both taken back all the same;
  review finding.)

  Args:
    builder: the builder (one without configs keeps its copies in `<name>/<version>`).
    where: the copy's folder.
    download_dir: where downloads go.
    lock: the preparation's lock file (`preparation_lock`).
  Returns:
    The function, to call under the lock (it may remove the lock file).
  """
  configs = builder.builder_config is not None
  home = os.path.dirname(os.path.dirname(where) if configs else where)
  record = os.path.join(home, ".config", "metadata.json")
  new_files = [p for p in (record, lock) if not os.path.lexists(p)]
  made = [files.missing_folders(p) for p in (os.path.dirname(record), where)]
  downloads = files.missing_folders(os.path.join(download_dir, "extracted"))

  def take_back() -> None:
    keep = {record} if configs and _copies_beside(home) else set()
    for path in new_files:
      if path not in keep and os.path.isfile(path) and not os.path.islink(path):
        with contextlib.suppress(OSError):
          os.remove(path)
    folders = made + ([] if _other_preparation(os.path.dirname(download_dir), lock)
                      else [downloads])
    for made_now in folders + folders:  # Twice: a list stops at a parent another list empties.
      files.remove_empty_folders(made_now)
  return take_back


def _copies_beside(home: str) -> bool:
  """Whether a config folder of the builder folder `home` (`<home>/<config>/`) holds a
  folder: a prepared copy of any version, or TFDS's unfinished one of a preparation under way
  (the copy a failed preparation was making is gone by then)."""
  try:
    configs = [c for c in os.listdir(home) if not c.startswith(".")]
  except OSError:
    return False
  for config in configs:
    try:
      if any(os.path.isdir(os.path.join(home, config, v))
             for v in os.listdir(os.path.join(home, config))):
        return True
    except OSError:  # Not a folder.
      continue
  return False


def _other_preparation(data_dir: str, lock: str) -> bool:
  """Whether a preparation lock in `data_dir` other than `lock` is held (`held_elsewhere`):
  the hidden `.lock` files in it and in its folders, where `preparation_lock` puts them
  (`<data_dir>/.<name>-<version>.lock`, `<data_dir>/<name>/.<name>-<version>.lock`)."""
  found = []
  for folder in [data_dir] + _subfolders(data_dir):
    with contextlib.suppress(OSError):
      found += [os.path.join(folder, e) for e in os.listdir(folder)
                if e.startswith(".") and e.endswith(".lock")]
  mine = os.path.abspath(lock)
  return any(held_elsewhere(p) for p in found if os.path.abspath(p) != mine)


def _subfolders(folder: str) -> list[str]:
  """The folders in `folder` (none where it cannot be listed)."""
  return [os.path.join(folder, e) for e in files.listed(folder)
          if os.path.isdir(os.path.join(folder, e))]


def load(builder: Any, *, manual_dir: str, download_dir: str, image_size: int,
         attribute_key: str = "attributes", progress: bool = True,
         check_metadata: Optional[Callable[[dict], None]] = None,
         discard_on_data_error: str = "") -> Dataset:
  """Prepares `builder` if needed and returns its splits at `image_size`.

  Args:
    builder: an `a2i_jax` builder (its info metadata holds attribute names and kinds).
    manual_dir: the folder of manually downloaded source files.
    download_dir: where downloads go.
    image_size: the size training wants; stored images of another size are resized.
    attribute_key: the feature holding the attribute vectors.
    progress: progress bars while reading.
    check_metadata: called with the metadata of a copy prepared before (once its checksums
      passed), before the splits are read; it raises to refuse the copy.
    discard_on_data_error: a folder (holding `builder`'s) to remove, with what an earlier
      stopped attempt left in it, when preparing stops with a `DataError`: one that every
      attempt on the same files meets (`discard_attempts`). "" keeps everything.
  Returns:
    The `Dataset`; its metadata is the builder's plus `SPLIT_IDS_KEY`: per split, the count
    and SHA-256 of its examples' ids (`ids_fingerprint`). A copy prepared from source files
    that have changed since is read as it is, with a warning (`_warn_changed_sources`).
  Raises:
    DataError: a file stands where the copy's folder should be; the copy is damaged
      (`damaged`: its checksums fail, it cannot be read, or its metadata names no attributes
      or another number than its vectors hold); the builder's own errors while preparing.
    DatasetNotPreparedError: source files are missing (from the builder).
  """
  where = os.fspath(builder.data_dir)
  if os.path.lexists(where) and not os.path.isdir(where):
    # Was: TFDS's KeyError "splits is empty" (a traceback): it takes any path there as a copy.
    what = "a link to no folder" if os.path.islink(where) else "a file"
    raise DataError(f"{where} is {what}, not a prepared copy; delete it and run the same "
                    "command again.")
  # One process prepares at a time; the others wait and then read its copy (was: a second
  # run started beside the first ended with TFDS's FileExistsError on the rename of its own
  # copy, a traceback). The lock file sits two levels above the version folder, whose
  # siblings TFDS reads as versions.
  # TFDS renames a finished copy into place, so one that is there is whole: no lock to read
  # it (a read-only data_dir, another user's), and copies are checked in parallel.
  lock = preparation_lock(where, builder.name)
  # Taken back if preparing fails (folders where left empty). Looked at, not recorded (TFDS
  # makes them): an empty folder another process makes meanwhile would be taken back too.
  take_back = _made_by_preparing(builder, where, download_dir, lock)
  # Unfinished copies are removed only under the lock: where it cannot be taken, another
  # process may be writing one (was: removed there too, the further run's work lost; review
  # finding).
  if os.path.isdir(where) and _unfinished(where):  # Left by a kill before it was prepared.
    with files.waiting_lock(lock, f"preparing {builder.name}") as locked:
      if locked:
        remove_unfinished(where)
  with (contextlib.nullcontext(False) if os.path.isdir(where)
        else files.waiting_lock(lock, f"preparing {builder.name}")) as locked:
    # A copy prepared before has checksums (or, prepared by an older version, none yet): they
    # are compared first, and anything that fails while it is read means it is damaged.
    was_prepared = os.path.isdir(where)
    summed = was_prepared and _check_copy(where)
    if not was_prepared:
      logging.info("preparing %s in %s (once)", builder.name, where)
      if locked:
        remove_unfinished(where)
      try:
        with quiet_tfds():
          prepare(builder, manual_dir, download_dir)
      except DataError:
        # Other failures (Ctrl-C, a full disk) are raised as they are: TFDS removes its
        # unfinished folder itself then, and what the builder unpacked is kept for the next
        # attempt. (Was: "leave TFDS's unfinished folder for the next attempt", which never
        # reuses it; one a killed process left stayed for good (review finding), so
        # `remove_unfinished` above removes it.)
        discard_attempts(discard_on_data_error, where, builder.name, lock_held=True)
        raise
      finally:
        if not os.path.isdir(where):  # Not prepared: what this run made and left empty.
          # (Was: an empty <data_dir>/folder/ or <data_dir>/a2i_lfw/no_masks/ left behind,
          # and the data_dir it made; and the lock file, TFDS's config record and
          # downloads/extracted/, fault hunt.)
          take_back()
      _write_checksums(where)
      summed = True
  # Bytes that match their checksums are not damaged: a failure then is raised as it is.
  # A copy prepared just now that fails is a fault of its preparing, not damage to delete.
  guard = damage_is_an_error(where) if was_prepared and not summed else contextlib.nullcontext()
  with guard, quiet_tfds():
    if was_prepared:
      prepare(builder, manual_dir, download_dir)  # A no-op that reads its metadata.
    meta = dict(builder.info.metadata or {})
    if was_prepared:
      _warn_changed_sources(meta, manual_dir, where)
    if was_prepared and check_metadata is not None:
      check_metadata(meta)
    ids = {name: [] for name in SPLITS}
    splits = {name: read_split(builder, name, attribute_key, progress=progress,
                               ids=ids[name]) for name in SPLITS}
  # Builders record names and kinds per attribute feature: "<feature>_names", "_kinds".
  names = tuple(meta.get(f"{attribute_key}_names", ()))
  kinds = tuple(meta.get(f"{attribute_key}_kinds", ()))
  _check_names_fit(where, names, splits["train"].attributes.shape[1])
  # Which examples each split holds, for dataset.json: a resumed run whose images moved
  # between splits (a folder's rows added or reordered) is refused (`train_eval`).
  meta[SPLIT_IDS_KEY] = {name: ids_fingerprint(v) for name, v in ids.items()}
  if not summed:  # Read whole: from now on its damage is detected.
    _write_checksums(where)
  check_attribute_names(names, kinds, f"the prepared copy of the dataset at {where}")
  for name, sp in splits.items():
    if sp.images.shape[1] != image_size:
      sp = dataclasses.replace(
          sp, images=resize_array(sp.images, image_size),
          masks=None if sp.masks is None else resize_array(sp.masks, image_size))
    splits[name] = sp
  logging.info("%s: %s", builder.name,
               ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
  return Dataset(name=builder.name, attribute_names=names, attribute_kinds=kinds,
                 splits=splits, metadata=meta)


ProgressFn = Callable[[Iterable[Any], str], Iterable[Any]]


def progress_bar(enabled: bool) -> ProgressFn:
  """`wrap(iterable, description)`: a tqdm bar when enabled, the iterable otherwise.

  Args:
    enabled: whether to show progress bars.
  Returns:
    A function of (iterable, description) that returns a tqdm bar over the iterable
    labelled with the description when `enabled`, else the iterable itself.
  """
  if not enabled:
    return lambda it, desc: it
  return lambda it, desc: bars.bar(it, desc=desc)
