"""Fault suite, files: damaged files the library reads (a checkpoint's checksum file, an entry
of JAX's persistent compilation cache) are detected and said or repaired, never a traceback
nor a damage kept forever (`a2i_jax/files.py`); a failed disk (EIO) is a storage error, one
line with its own advice, never damage.

Fast: the compilation cache's entry is one tiny program's, in this process; the checkpoint is
a copy of the session's train.py run (conftest).
"""

import errno
import glob
import os
import shutil
import time
import warnings

import jax
import jax.numpy as jnp
import pytest

from a2i_jax import checkpoints, files, inference
from a2i_jax.errors import CheckpointError, WorkdirError


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


def _eio(path: str = "") -> OSError:
  return OSError(errno.EIO, os.strerror(errno.EIO), *((path,) if path else ()))


_EIO_WORDS = "an input/output error: the disk or its connection failed"
_EIO_FIX = "Check the disk (the system log, dmesg, says more), then run the same command"


def test_a_failed_disk_in_the_training_loop_is_one_line_with_its_own_advice(tmp_path,
                                                                           monkeypatch):
  """Was: EIO (the disk or its connection failed) at a checkpoint save, a metrics row or a
  sample grid was a traceback (only a full disk, a quota, a read-only disk and permissions
  were storage errors), and every storage error's line said "Free some space (or fix the
  permissions)". Now EIO, also as Orbax only quotes it, is the loop's one line, with advice
  by its errno."""
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel

  def save(self, step, state):  # As tensorstore's failed write reaches the loop: quoted.
    raise ValueError(f"UNKNOWN: Error writing {self.directory}/{step}: Input/output error "
                     "[os_error_code='5']")
  monkeypatch.setattr(checkpoints.Checkpointer, "save", save)
  workdir = str(tmp_path / "w")
  with pytest.raises(WorkdirError) as e:
    train_lib.train_and_evaluate(tiny_config("vae"), workdir)
  line = str(e.value)
  assert line.startswith(f"writing to {workdir} failed at step 2: {_EIO_WORDS}. "), line
  assert line.endswith(f"{_EIO_FIX} to resume."), line
  assert "free some" not in line.lower() and "\n" not in line, line
  # A read-only disk's and a full disk's: their own (was the same for both); a file too large.
  for code, fix in ((errno.EROFS, "make the file system writable"),
                    (errno.ENOSPC, "free some space"), (errno.EFBIG, "raise the file size "
                     "limit (ulimit -f) or use a file system that takes larger files (FAT32 "
                     "stops at 4 GiB)")):
    assert files.storage_fix(files.storage_error(ValueError(os.strerror(code)))) == fix, code


def test_a_failed_disk_before_the_training_loop_is_one_line_with_its_own_advice(
    tmp_path, monkeypatch):
  """Was: EIO while the run's record was written, before the loop, a traceback; the line of
  the other storage errors said "Free some space (or fix the permissions)" for each."""
  from a2i_jax import train_eval, train_lib  # pylint: disable=import-outside-toplevel
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / "w")
  monkeypatch.setattr(train_eval, "record_dataset", lambda *a, **k: (_ for _ in ()).throw(
      _eio(os.path.join(workdir, "dataset.json"))))
  with pytest.raises(WorkdirError) as e:
    train_lib.train_and_evaluate(tiny_config("vae"), workdir)
  assert not os.path.exists(workdir)  # Taken back, as after a full disk there.
  assert str(e.value) == (
      f"the workdir {workdir} could not be used before training started ({workdir}/"
      f"dataset.json: {_EIO_WORDS}). {_EIO_FIX} again."), str(e.value)


def test_a_failed_disk_under_a_checksum_file_is_not_damage(train_py_reference, tmp_path,
                                                          monkeypatch):
  """Was: EIO reading a checkpoint's checksum file made it "unreadable", the checkpoint
  "corrupt" (training would move it aside); the disk failed, not the checkpoint's bytes. Now
  the read's error, named as the disk's."""
  workdir = str(tmp_path / "w")
  shutil.copytree(train_py_reference, workdir)
  path = os.path.join(workdir, "checkpoints", "6", checkpoints.CHECKSUM_FILE)
  real = open
  monkeypatch.setattr(files, "open", lambda p, *a, **k: (  # Only `files`' reads fail.
      (_ for _ in ()).throw(_eio(p)) if p == path else real(p, *a, **k)), raising=False)
  with pytest.raises(CheckpointError) as e:
    inference.load_trained(workdir)
  assert str(e.value).startswith(f"could not read {path} ({_EIO_WORDS}); "), str(e.value)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "6"]


def _latin1(monkeypatch):
  """This process's file names written as Latin-1, as under LC_ALL=en_US.ISO-8859-1 outside
  Python's UTF-8 mode (`os.fsencode` strict: a character Latin-1 lacks cannot be written)."""
  def fsencode(path):
    path = os.fspath(path)
    return path.encode("latin-1") if isinstance(path, str) else path
  monkeypatch.setattr(os, "fsencode", fsencode)
  monkeypatch.setattr(os.sys, "getfilesystemencoding", lambda: "iso8859-1")


def test_a_workdir_or_data_dir_not_written_as_utf8_is_refused_in_one_line(tmp_path,
                                                                         monkeypatch):
  """Was (fault hunt): a workdir of bytes that are not UTF-8 (runs/caf\\xe9) trained to its
  first checkpoint, then 69 tracebacks from Orbax (TensorStore takes paths as UTF-8 text); and
  under a Latin-1 locale, runs/run_é (its UTF-8 bytes, read as "run_Ã©") trained to the end
  with every checkpoint an empty shell, its arrays in a folder named run_Ã©. A data_dir there
  (dd_é) was a traceback from the ArrayRecord writer, its folders left behind. Each is one
  line that names the path (printable) and the fix, before anything is written."""
  from a2i_jax.data import tfds_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax.data.base import DataError  # pylint: disable=import-outside-toplevel
  bytes_path = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9")
  with pytest.raises(WorkdirError) as e:
    files.check_workdir_path(bytes_path)
  assert str(e.value) == (
      f"the workdir {tmp_path}/caf\\xe9 is not a valid UTF-8 name, and Orbax saves its "
      "checkpoints' arrays (TensorStore, which takes UTF-8 paths) elsewhere or not at all; "
      "use a name that is valid UTF-8 (rename the folder where it exists)."), str(e.value)
  # The notebook API reads a run so too (was: another folder's arrays, or none; read-through).
  with pytest.raises(checkpoints.CheckpointError) as read:
    inference.load_trained(bytes_path)
  assert str(read.value) == (
      f"the workdir {tmp_path}/caf\\xe9 is not a valid UTF-8 name, and its checkpoints are "
      "read by TensorStore, which takes UTF-8 paths only; use a name that is valid UTF-8 "
      "(rename the folder where it exists)."), str(read.value)
  typed = "run_\u00e9".encode("utf-8").decode("latin-1")  # As a Latin-1 process reads it.
  files.check_workdir_path(str(tmp_path / typed))  # Fine where names are UTF-8.
  with monkeypatch.context() as m:
    _latin1(m)
    assert not files.is_utf8_path(typed)
    assert files.is_utf8_path("run_plain") and not files.is_utf8_path("\u5e3d")
    with pytest.raises(WorkdirError) as e:
      files.check_workdir_path(str(tmp_path / typed))
    with pytest.raises(DataError) as d:
      tfds_lib.check_utf8_path(str(tmp_path / typed))
    # Typed in a Latin-1 terminal (its bytes are Latin-1): no locale makes them UTF-8, so the
    # advice is the ASCII name alone (was also "a UTF-8 locale or PYTHONUTF8=1", which then
    # refused it as not UTF-8; read-through).
    with pytest.raises(WorkdirError) as latin:
      files.check_workdir_path(str(tmp_path / "run_\u00e9"))
    assert str(latin.value).endswith("; use a name of ASCII letters (rename the folder where it "
                                     "exists)."), str(latin.value)
  for error in (e, d):
    assert "cannot be written as UTF-8 in this process (its file-system encoding is " \
        "iso8859-1)" in str(error.value) and "PYTHONUTF8=1" in str(error.value), error.value
  assert f"the workdir {tmp_path}/run_\u00e9 cannot" in str(e.value)  # As the user typed it.
  assert os.listdir(tmp_path) == []


def test_a_run_started_with_a_group_umask_can_be_resumed_by_the_group(tmp_path,
                                                                      monkeypatch):
  """Was (fault hunt): `.lock` was made 0o644 whatever the umask, and opened for writing, so a
  group member (umask 002, a setgid shared folder) was refused the resume of a run whose
  every other file it could write: "cannot write to ... (permission denied)", naming no file.
  The lock file is made as the others are (0o666 less the umask); one the user may not write
  (another user's, made so before) is named, with what to ask of its owner (not locked
  read-only: on NFS that was EBADF's traceback after the data load; read-through)."""
  old = os.umask(0o002)
  try:
    with files.workdir_lock(str(tmp_path / "run")):
      pass
  finally:
    os.umask(old)
  lock = str(tmp_path / "run" / files.LOCK_FILE)
  assert os.stat(lock).st_mode & 0o777 == 0o664
  real_open, real_access, run = os.open, os.access, str(tmp_path / "run")

  def open_as_group_member(path, flags, *args):  # Another user's 0o644 lock file (the test
    if path == lock and flags & (os.O_WRONLY | os.O_RDWR) and not flags & os.O_EXCL:  # may
      raise PermissionError(13, "Permission denied", path)  # run as root).
    return real_open(path, flags, *args)
  monkeypatch.setattr(files.os, "open", open_as_group_member)
  monkeypatch.setattr(files.os, "access", lambda path, mode, *a, **k: (
      False if path == lock and mode & os.W_OK else real_access(path, mode, *a, **k)))
  owner = os.stat(lock).st_uid
  for me, words in ((owner + 1, f"which another user (uid {owner}) made; ask them to make it "
                     f"group-writable (chmod g+w {lock}), or to delete it where no run of "
                     "theirs uses the workdir, then run the same command again."),
                    (owner, f"make it writable (chmod u+w {lock}), then run the same command "
                     "again.")):
    monkeypatch.setattr(files.os, "getuid", lambda me=me: me)
    # Said before the data load (`check_workdir_free`), and by the lock itself.
    with pytest.raises(WorkdirError) as early:
      files.check_workdir_free(run)
    with pytest.raises(WorkdirError) as e:
      with files.workdir_lock(run):
        pass
    for error in (early, e):
      assert str(error.value).startswith(f"cannot write the run's lock file {lock} (permission "
                                         "denied)") and str(error.value).endswith(words), \
          str(error.value)
  assert os.path.exists(lock)


def test_no_home_folder_for_the_data_folders_is_one_line(tmp_path, monkeypatch):
  """Was (fault hunt): HOME unset for a user the password database does not know (a
  container's arbitrary user) put the data in a folder named "~" in the working folder
  (./~/.cache/a2i_jax/synthetic_...npz; ./~/a2i_data for LFW, CUB and folders). The data
  folders' defaults are refused in one line, before anything is made."""
  import pwd  # pylint: disable=import-outside-toplevel
  from a2i_jax import config_lib, data  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import tfds_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax.data.base import DataError  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(pwd, "getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
  monkeypatch.delenv("HOME", raising=False)
  # Where set, the cache's default is under it and needs no home (`data.cache_folder`).
  monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
  monkeypatch.chdir(tmp_path)
  config = config_lib.get_config(os.path.join(os.path.dirname(__file__), os.pardir, "configs",
                                              "lfw.py"))
  with pytest.raises(DataError) as e:
    data.check_settings(config.data)
  assert str(e.value) == ("config.data.cache_dir=~/.cache/a2i_jax cannot be found (no home "
                          "folder: HOME is not set); set HOME, or pass "
                          "--config.data.cache_dir=<an absolute folder>."), str(e.value)
  config.data.cache_dir = str(tmp_path / "cache")
  with pytest.raises(DataError, match=r"^config.data.data_dir=~/a2i_data cannot be found"):
    data.check_settings(config.data)
  with pytest.raises(DataError, match=r"\(there is no user 'a2i-no-such-user'\)"):
    tfds_lib.data_dir_path("~a2i-no-such-user/data")
  assert os.listdir(tmp_path) == []


def test_names_the_locale_cannot_write_get_file_names_and_a_workdir_is_refused(tmp_path,
                                                                              monkeypatch):
  """Was (fault hunt): under a Latin-1 locale, progression and edit of a folder run whose CSV
  has a column 帽子 stopped with UnicodeEncodeError's traceback from the file names, for every
  attribute at once (edit --attribute=smile too). Such a name's part is "_" for each
  character, the hash of the whole name after it. And infer.py on a workdir of bytes that are
  not UTF-8 was 65 tracebacks from the restore, then advice to change the config: one line."""
  import infer  # pylint: disable=import-outside-toplevel
  from a2i_jax.errors import InputError  # pylint: disable=import-outside-toplevel
  names = ("smile", "\u5e3d\u5b50", "\u5e3d\u5b50x")  # Apart from other tests' (a cache).
  from a2i_jax.data import folder  # pylint: disable=import-outside-toplevel
  with monkeypatch.context() as m:
    _latin1(m)
    parts = infer._file_parts(names, 200)  # pylint: disable=protected-access
    edit = infer._file_part("smile", names, "edit_", ".json")  # pylint: disable=W0212
    # One helper makes both kinds of names (`files.fitted_name`): infer.py's keep what the
    # locale writes, a folder dataset's prepared copy what its UTF-8 writer names the same.
    ours = files.fitted_name("caf\u00e9\u5e3d", 200)
    copy = folder._prepared_name("caf\u00e9\u5e3d", "0123456789ab")  # pylint: disable=W0212
  assert ours == "caf\u00e9_" and copy == "caf__-0123456789ab"
  # Cut between characters, by bytes: 1 + 3 for "a" and a CJK one in UTF-8.
  assert [files.fitted_name("a\u5e3db", n) for n in (0, 3, 4, 5, 9)] == [
      "", "a", "a\u5e3d", "a\u5e3db", "a\u5e3db"]
  assert parts["smile"] == "smile" and edit == "smile"
  assert parts[names[1]].startswith("__~") and parts[names[2]].startswith("__x~")
  assert len(set(parts.values())) == 3 and all(len(p) <= 200 for p in parts.values())
  options = infer.Options(
      workdirs=[os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9")], modes=["sample"],
      out=None, step=None, input=None, num_images=None, samples_per_attribute=1,
      attribute=None, value=None, occlusions=None, steps=None, restarts=None,
      num_examples=-1, attribute_fidelity=False, seed=0)
  with pytest.raises(InputError) as e:
    options.check()
  assert str(e.value).startswith(f"--workdir {tmp_path}/caf\\xe9 is not a valid UTF-8 name, "
                                 "and its checkpoints are read by TensorStore"), str(e.value)


def test_a_folder_datasets_path_and_names_follow_the_file_systems_encoding(tmp_path,
                                                                          monkeypatch):
  """Was (fault hunt): a folder dataset's data.path "~/faces" with no home folder (HOME unset,
  a user the password database does not know) was read from a folder named "~" in the working
  folder; and under a Latin-1 locale outside UTF-8 mode (a notebook), a CSV row naming
  "visage_é.png" (the CSV is UTF-8) was looked up at the name's Latin-1 bytes: "does not
  exist", beside the file. data.path is refused in one line; a CSV cell is the name on disk of
  its UTF-8 bytes."""
  import pwd  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import folder  # pylint: disable=import-outside-toplevel
  from a2i_jax.data.base import DataError  # pylint: disable=import-outside-toplevel
  assert folder._as_on_disk("visage_\u00e9.png") == "visage_\u00e9.png"  # UTF-8 names.
  with monkeypatch.context() as m:  # The name a Latin-1 process reads for those bytes.
    m.setattr(os, "fsdecode", lambda b: b.decode("latin-1") if isinstance(b, bytes) else b)
    assert folder._as_on_disk("visage_\u00e9.png") == "visage_\u00c3\u00a9.png"
  monkeypatch.setattr(pwd, "getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
  monkeypatch.delenv("HOME", raising=False)
  monkeypatch.chdir(tmp_path)
  with pytest.raises(DataError) as e:
    folder.scan("~/faces", masks=False)
  assert str(e.value) == ("config.data.path=~/faces cannot be found (no home folder: HOME is "
                          "not set); set HOME, or pass --config.data.path=<an absolute "
                          "folder>."), str(e.value)
  assert os.listdir(tmp_path) == []


# ------------------------------------------------------ resources: disk, path length, files


def test_a_full_disk_under_the_array_record_writer_is_one_line(tmp_path, monkeypatch):
  """Was (fault hunt of resource exhaustion): a full disk, a file past the size limit or a
  path too long while TFDS wrote a prepared copy (folder, LFW, CUB) was a 68-line traceback
  ending in the ArrayRecord writer's RuntimeError, 'Failed to finalize writing of split
  "train": write() failed: No space left on device': load_dataset took OSErrors alone. Now
  one line naming the dataset, the data folder, the cause and the fix."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.core import file_adapters  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import load_dataset  # pylint: disable=import-outside-toplevel
  from a2i_jax.data.base import DataError  # pylint: disable=import-outside-toplevel
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel
  path = tmp_path / "f"
  (path / "images").mkdir(parents=True)
  lines = ["filename,split,smile"]
  for i, split in enumerate(("train", "validation", "test")):
    Image.fromarray(np.full((4, 4, 3), 40 * i, np.uint8)).save(path / "images" / f"img{i}.png")
    lines.append(f"img{i}.png,{split},{i % 2}")
  (path / "attributes.csv").write_text("\n".join(lines) + "\n")
  cfg = tiny_config("cvae").data
  cfg.name, cfg.path, cfg.data_dir, cfg.image_size = "folder", str(path), str(tmp_path / "d"), 4
  other = "point config.data.data_dir at another folder"
  for code, words, fix in (
      (errno.ENOSPC, "no space left on the device", f"free some space (or {other}),"),
      (errno.EFBIG, "a file is larger than the file system or the file size limit (ulimit -f) "
       "allows", "raise the file size limit (ulimit -f) or use a file system that takes larger "
       f"files (FAT32 stops at 4 GiB), or {other},"),
      (errno.ENAMETOOLONG, "a path is longer than the file system allows",
       f"use a shorter path (or {other}),")):

    def write(cls, where, examples, c=code):  # As the writer's close fails (TFDS adds
      del cls, examples  # 'Failed to finalize writing of split "train": ').
      raise RuntimeError(f"write() failed: {os.strerror(c)}; writing {where}")
    monkeypatch.setattr(file_adapters.ArrayRecordFileAdapter, "write_examples",
                        classmethod(write))
    with pytest.raises(DataError) as e:
      load_dataset(cfg, progress=False)
    assert str(e.value) == (f"preparing the folder dataset {path} failed: {words} in "
                            f"{tmp_path / 'd'}; {fix} then run the same command again."), \
        str(e.value)
  monkeypatch.undo()
  ds = load_dataset(cfg, progress=False)  # Space again: prepared, as the line says.
  assert len(ds.splits["train"]) == 1


def test_too_many_open_files_or_too_long_a_path_at_a_save_is_a_storage_error():
  """Was (fault hunt): `ulimit -n 16` failed the first checkpoint with a traceback, Python's
  "Too many open files" or tensorstore's RESOURCE_EXHAUSTED quoting it (only its code, in
  some), and a workdir path too long with tensorstore's "File name too long": neither was a
  storage error, so the training loop's one line did not take them. Now each is, with its
  own advice."""
  spec = '[tensorstore_spec=\'{"driver":"zarr"}\']'
  for text, code, fix in (
      ('RESOURCE_EXHAUSTED: Error opening "zarr" driver: Failed to open directory: "/r/'
       f'checkpoints/2.orbax-checkpoint-tmp": Too many open files {spec}', errno.EMFILE,
       "raise the limit of open files (ulimit -n 4096, or more)"),
      ("RESOURCE_EXHAUSTED: Failed to open /r/checkpoints/2 [os_error_code=24]", errno.EMFILE,
       None),
      ("Too many open files in system", errno.ENFILE, "close programs that hold many files, "
       "or raise the system's limit (sysctl fs.file-max)"),
      ('NOT_FOUND: Error writing local file "/r/x": File name too long [os_error_code=36]',
       errno.ENAMETOOLONG, "use a shorter path"),
      ("[Errno 24] Too many open files: '/r/checkpoints/1/_CHECKPOINT_METADATA'", errno.EMFILE,
       None)):
    error = files.storage_error(ValueError(text))
    assert error is not None and error.errno == code, text
    assert fix is None or files.storage_fix(error) == fix, files.storage_fix(error)
  assert files.storage_error(ValueError("NOT_FOUND: [os_error_code=2]")) is None


def test_a_workdir_too_long_for_its_checkpoints_paths_is_refused_before_the_data_load(
    tmp_path, monkeypatch):
  """Was (fault hunt): a legal workdir of about 3,980 characters trained, then its first
  checkpoint failed with a 154-line traceback (tensorstore's "File name too long"), the steps
  lost. Refused in one line before anything is written; one that leaves room still trains."""
  import faults_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax import train_lib  # pylint: disable=import-outside-toplevel
  from conftest import tiny_config  # pylint: disable=import-outside-toplevel
  loaded = faults_lib.no_data_load(monkeypatch, train_lib)
  limit = os.pathconf(str(tmp_path), "PC_PATH_MAX")
  fits = limit - files.RUN_PATH_ROOM - 1
  workdir = str(tmp_path)
  while len(workdir) < fits:
    workdir = os.path.join(workdir, "d" * min(200, fits - len(workdir) - 1))
  workdir = workdir[:fits]
  assert len(os.fsencode(workdir)) == fits
  with pytest.raises(loaded):  # Past the checks, to the data load.
    train_lib.train_and_evaluate(tiny_config("vae"), workdir)
  with pytest.raises(WorkdirError) as e:
    train_lib.train_and_evaluate(tiny_config("vae"), workdir + "x")
  assert str(e.value) == (
      f"the workdir {workdir[:60]}... is {fits + 1} bytes long: the paths of its checkpoints "
      f"(up to {files.RUN_PATH_ROOM} bytes more) would pass the {limit} bytes this system "
      f"takes in a path; pass a --workdir of at most {fits} bytes."), str(e.value)
  assert os.listdir(tmp_path) == []
  # The room covers what is written: a checkpoint of a 10-digit step saves and restores in
  # the longest workdir taken.
  saver = checkpoints.Checkpointer(workdir)
  saver.save(1234567890, {"w": jnp.ones(3)})
  saver.close()
  assert checkpoints.Checkpointer(workdir, create=False).check(1234567890) is None
  # And no more than it (review of 5a67595): the room was 200 bytes, which refused workdirs
  # of 3,896 bytes and longer on a system of 4,096 whose runs trained (the longest path they
  # wrote was 116 bytes longer). It covers the longest of them with a 10-digit step and
  # process number, and TensorBoard's file with a 64-byte host name.
  longest = max(
      len(f"/checkpoints/{10 ** 9}.orbax-checkpoint-tmp/default.orbax-checkpoint-tmp/"
          f"ocdbt.process_{10 ** 9}/d/{'0' * 32}"),
      len(f"/tensorboard/events.out.tfevents.{10 ** 9}.{'h' * 64}.{'0' * 7}.{'0' * 6}"))
  assert longest <= files.RUN_PATH_ROOM, (longest, files.RUN_PATH_ROOM)
  trained = str(tmp_path)
  while len(trained) < limit - 200:
    trained = os.path.join(trained, "d" * min(200, limit - 200 - len(trained) - 1))
  assert len(os.fsencode(trained)) == limit - 200
  files.check_path_room(trained)  # Was: refused.


def test_a_workdir_watch_needs_no_read_permission(tmp_path, monkeypatch):
  """Was (review of 5a67595): the watch of a training run's workdir opened it O_RDONLY,
  which a folder of mode 0o300 (write and search only) refuses a user other than root: a
  PermissionError's traceback. It opens the folder with O_PATH (Linux), which needs no
  permission on it; where that fails too, nothing is watched, and that is no error."""
  workdir, moved = str(tmp_path / "w"), str(tmp_path / "moved")
  os.mkdir(workdir)
  real = os.open

  def mode_300(path, flags, *args, **kwargs):  # Root reads any folder: as a user would be.
    if path == workdir and not flags & getattr(os, "O_PATH", 0):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return real(path, flags, *args, **kwargs)
  monkeypatch.setattr(os, "open", mode_300)
  watch = files.WorkdirWatch(workdir)
  monkeypatch.undo()
  watch.check("the metrics row of step 1")  # In place: passes.
  os.rename(workdir, moved)
  with pytest.raises(WorkdirError, match=f"^the workdir {workdir} was moved to {moved} "):
    watch.check("the metrics row of step 2")
  watch.close()

  def refused(path, flags, *args, **kwargs):
    if path == moved:
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return real(path, flags, *args, **kwargs)
  monkeypatch.setattr(os, "open", refused)
  watch = files.WorkdirWatch(moved)  # Was: raised.
  monkeypatch.undo()
  os.rename(moved, workdir)
  watch.check("the metrics row of step 3")  # Nothing watched: nothing said.
  assert not watch.left_behind()
