"""Fault suite, files: damaged files the library reads (a checkpoint's checksum file, an entry
of JAX's persistent compilation cache) are detected and said or repaired, never a traceback
nor a damage kept forever (`a2i_jax/files.py`).

Fast: the compilation cache's entry is one tiny program's, in this process; the checkpoint is
a copy of the session's train.py run (conftest).
"""

import glob
import os
import shutil
import time
import warnings

import jax
import jax.numpy as jnp
import pytest

from a2i_jax import checkpoints, files, inference
from a2i_jax.errors import CheckpointError


def test_a_checksum_file_nested_past_the_recursion_limit_is_damage(train_py_reference,
                                                                  tmp_path):
  """Review: a checksum file holding JSON nested past Python's recursion limit ('[' * 200000
  as the newest checkpoint's a2i_sha256.json) was a RecursionError traceback from infer.py,
  not the damage's message that names the intact checkpoint to use."""
  workdir = str(tmp_path / "w")
  shutil.copytree(train_py_reference, workdir)
  path = os.path.join(workdir, "checkpoints", "6", checkpoints.CHECKSUM_FILE)
  with open(path, "w", encoding="utf-8") as f:
    f.write("[" * 200000)
  with pytest.raises(ValueError, match=f"{path} is unreadable \\(RecursionError\\)"):
    files.read_digests(path)
  with pytest.raises(CheckpointError, match=(
      f"checkpoint 6 in {workdir}/checkpoints is corrupt \\(its checksum file "
      f"{checkpoints.CHECKSUM_FILE} is unreadable\\); the newest intact checkpoint is step 4")):
    inference.load_trained(workdir)


def _entries(folder: str) -> list[str]:
  return glob.glob(os.path.join(folder, "jit_a2i_cut_short-*-cache"))


@pytest.fixture()
def cache_folder(tmp_path):
  """A compilation cache folder of this test's own, taken as `train.py` takes one, and the
  suite's put back after (JAX opens its cache once, at its first use: it is reset)."""
  from jax._src import compilation_cache  # pylint: disable=import-outside-toplevel
  names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  before = {name: getattr(jax.config, name) for name in names}
  folder = str(tmp_path / "xla")
  try:
    files.enable_compilation_cache(folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    compilation_cache.reset_cache()
    yield folder
  finally:
    for name, value in before.items():
      jax.config.update(name, value)
    compilation_cache.reset_cache()


def _compile() -> list[str]:
  """Compiles one tiny program afresh (through the persistent cache); JAX's warnings."""
  def a2i_cut_short(x):
    return jnp.sin(x) * 3.0 + 1.0
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    jax.jit(a2i_cut_short)(jnp.zeros((8,), jnp.float32)).block_until_ready()
  return [str(w.message) for w in caught]


def _cut_short(entry: str, age_s: float) -> None:
  """Cuts `entry` to half its bytes, as a full disk or a kill while JAX wrote it leaves it,
  changed `age_s` seconds ago."""
  with open(entry, "rb") as f:
    data = f.read()
  with open(entry, "wb") as f:
    f.write(data[:len(data) // 2])
  then = time.time() - age_s
  os.utime(entry, (then, then))


def test_a_cut_short_compilation_cache_entry_is_removed_and_kept_again(cache_folder, caplog):
  """Review: JAX writes a cache entry in place and never writes a name that exists, and
  only empty entries were removed at start: one cut short (a disk that filled partway, a
  kill while it was written) gave JAX's two-line warning ("Error reading persistent
  compilation cache entry ... incomplete or truncated stream") and a compile at every start,
  forever. Now the entry is removed as it is read, with one line, and kept whole again."""
  assert not _compile() and len(_entries(cache_folder)) == 1
  [entry] = _entries(cache_folder)
  with open(entry, "rb") as f:
    whole = f.read()
  _cut_short(entry, 3600)  # An hour ago: a run before this one left it so.
  caplog.clear()
  said = _compile()
  assert not [s for s in said if "persistent compilation cache" in s], said
  lines = [r.getMessage() for r in caplog.records if "compilation cache entry" in r.getMessage()]
  assert lines == [f"the compilation cache entry {entry} could not be read (cut short or "
                   "damaged: a full disk, or a stop while it was written); removed, its program "
                   "is compiled and kept again"], lines
  from jax._src import compilation_cache  # pylint: disable=import-outside-toplevel
  with open(entry, "rb") as f:  # Kept again, whole (zlib or zstd, as this JAX writes).
    kept = f.read()
  assert (len(compilation_cache.decompress_executable(kept))
          == len(compilation_cache.decompress_executable(whole)))
  # Just written: it may be another process's, being written now. A miss, left to it.
  _cut_short(entry, 0)
  caplog.clear()
  said = _compile()
  assert not [s for s in said if "persistent compilation cache" in s], said
  assert "compilation cache entry" not in caplog.text
  assert os.path.getsize(entry) == len(kept) // 2


def test_a_disk_that_fills_while_an_entry_is_written_leaves_none_cut_short(cache_folder):
  """Review: JAX writes a cache entry in place, so a disk that filled partway (or a kill while
  it wrote) left it cut short under its final name, for every later start to read (and, since
  the read repairs it, to compile anew once more); another process that read it while it was
  written took it for damage. Now it is written under a temporary name and renamed whole: the
  write fails as before (JAX's warning), and leaves nothing."""
  import resource  # pylint: disable=import-outside-toplevel
  import signal  # pylint: disable=import-outside-toplevel
  limits = resource.getrlimit(resource.RLIMIT_FSIZE)
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Past the limit: EFBIG, as ENOSPC.
  try:
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, limits[1]))  # The entry has 2-4 KB.
    said = _compile()
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    signal.signal(signal.SIGXFSZ, handler)
  assert [s for s in said if s.startswith("Error writing persistent compilation cache")], said
  assert not _entries(cache_folder) and not os.listdir(cache_folder)
  assert not _compile() and len(_entries(cache_folder)) == 1  # Space again: kept.
  assert sorted(os.listdir(cache_folder)) == [os.path.basename(e) for e in _entries(cache_folder)]


def test_the_cache_folder_is_swept_of_what_a_stop_left_but_not_of_what_is_being_written(
    tmp_path):
  """A kill while an entry was written leaves its temporary file (the entry itself is not
  there): swept at a start once an hour old; a younger one may be being written now. Empty
  entries (a full disk before) are removed, as before; other files stay."""
  folder = tmp_path / "xla"
  folder.mkdir()
  old, young = time.time() - 7200, time.time()
  names = {".jit_run-ab12-cache.x1y2z3w4.tmp": old, ".jit_run-cd34-cache.a1b2c3d4.tmp": young,
           "jit_init-ef56-cache": old, "jit_init-ab78-cache": young, "notes.tmp": old}
  for name, when in names.items():
    (folder / name).write_bytes(b"" if name.endswith("-cache") else b"x")
    os.utime(folder / name, (when, when))
  files._remove_empty_cache_entries(str(folder))  # pylint: disable=protected-access
  assert sorted(os.listdir(folder)) == [".jit_run-cd34-cache.a1b2c3d4.tmp", "notes.tmp"]
