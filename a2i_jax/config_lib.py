"""Config files and their checks (`validate_config`). The values themselves live in `configs/`;
a run's config.json is written and read by `checkpoints`.

`configs/` is read as files, by path (it is not an installed package, so it can neither shadow
nor be shadowed by another package named `configs`): `get_config("configs/lfw.py:discvae")`
from Python, `--config=configs/lfw.py:discvae` on the command line. A config file that builds
on another loads it with `load_sibling(__file__, "default")`.
"""

from __future__ import annotations

import difflib
import importlib.machinery
import importlib.util
import inspect
import json
import math
import os
import re
import shlex
import traceback
from types import ModuleType
from typing import Any, Iterator, Optional, Sequence

from absl import flags
import ml_collections
import numpy as np

from a2i_jax import models, perf
from a2i_jax.data import base as data_base
from a2i_jax.data import face_masks, synthetic
from a2i_jax.errors import ConfigError
from a2i_jax.inputs import is_integer
from a2i_jax.models import MODEL_NAMES

DATASETS = data_base.DATASET_NAMES
# Posterior inference's choices (config.inference; a2i_jax/inference).
INFERENCE_ENERGIES = ("auto", "gaussian", "smooth_l1", "l2")
INFERENCE_INITS = ("encoder", "zeros", "prior")
INFERENCE_SCHEDULES = ("constant", "cosine")
# int32's largest value: the largest count of steps or restarts inference takes, and of the
# sizes and counts the device code holds in int32.
INT32_MAX = 2**31 - 1
# The largest config.seed: jax.random.key keeps the low 32 bits only (2**32 would be seed 0),
# and infer.py's --seed has the same range.
MAX_SEED = INT32_MAX
# config.model keys that only some models read (`models.create_model`); the others ignore them.
MODEL_KEY_USERS = {"z_dim": ("vae", "cvae"), "zf_dim": ("discvae",), "zb_dim": ("discvae",),
                   "block_kl_bg_grad_to_fg": ("discvae",), "gate_loss_weight": ("discvae",),
                   "composition": ("discvae",), "recon_weight": ("discvae",)}


# Top-level keys read for some models only (model.name): the disCVAE's sample grid shows one
# draw per attribute row, its layers beside the composite (`train_eval.write_samples`), so an
# override of num_sample_cols did nothing there without a word.
TOP_KEY_USERS = {"num_sample_cols": ("vae", "cvae")}


# config.data keys (and sections) read by some datasets only (data.name): an override of one
# for another dataset would be taken and do nothing (a review found --config.data.path=...
# training on the synthetic data without a word).
DATA_KEY_USERS = {"path": ("folder",), "resize": ("folder",), "cub_attributes": ("cub",),
                  "mask_net": ("lfw",), "download": ("lfw", "cub"),
                  "data_dir": ("lfw", "cub", "folder"), "synthetic": ("synthetic",),
                  # The synthetic data always carry their masks (was: masks=False taken).
                  "masks": ("lfw", "cub", "folder")}


# The attribute where `get_config` (and train.py) note the `--config` value a config was
# built from, so that the settings changed after it can be told from the file's own
# (`set_keys`). A copy of the config does not carry it.
_ORIGIN = "_a2i_config_origin"


def note_origin(config: ml_collections.ConfigDict, spec: str,
                typed: Sequence[str] = ()) -> None:
  """Notes on `config` the `--config` value it was built from ("configs/lfw.py:discvae").

  Args:
    config: the config the file returned.
    spec: the `--config` value, "path[:arg]".
    typed: keys a command line overrode (train.py's), set whatever their values.
  """
  object.__setattr__(config, _ORIGIN, (spec, tuple(typed)))


def keep_origin(source: ml_collections.ConfigDict,
                target: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`target` (a copy of `source`) noted with `source`'s origin (`note_origin`), which a copy
  does not carry: a library copy of the user's config (train_lib's, making relative data
  paths absolute) is checked as the config the user built (was: compared with every config
  file instead, so a relative data_dir let a model.name change through, and refused a value
  the user's own file set; read-through).

  Args:
    source: a config, noted or not.
    target: its copy.
  Returns:
    `target`.
  """
  noted = getattr(source, _ORIGIN, None)
  if noted is not None:
    object.__setattr__(target, _ORIGIN, noted)
  return target


def origin(config: Any) -> Optional[str]:
  """The `--config` value `config` was built from (`note_origin`).

  Args:
    config: a config (or anything else: None).
  Returns:
    "path[:arg]"; None where not noted (a copy, one built by hand or read from a run).
  """
  noted = getattr(config, _ORIGIN, None) if isinstance(config, ml_collections.ConfigDict) else None
  return noted[0] if isinstance(noted, tuple) and isinstance(noted[0], str) else None


def _file_configs(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The configs that the config files of `configs_dir()` give `config`'s model and dataset
  (each file's own and its variants'), the values a config not noted with its origin is
  compared with; configs/default.py's where none does."""
  found = []
  folder = configs_dir()
  names = sorted(n for n in os.listdir(folder) if n.endswith(".py")) if os.path.isdir(
      folder) else []
  for name in names:
    for arg in ("", *MODEL_NAMES):
      try:
        other = get_config(f"{os.path.join(folder, name)}{':' + arg if arg else ''}")
      except Exception:  # pylint: disable=broad-except  (no such variant, a broken file)
        continue
      if (value_at(other, "model.name") == value_at(config, "model.name")
          and value_at(other, "data.name") == value_at(config, "data.name")):
        found.append(other)
  return found or [reference_config()]


def set_keys(config: ml_collections.ConfigDict,
             base: Optional[ml_collections.ConfigDict] = None) -> list[str]:
  """The keys whose values the caller set: those that differ from the config file's, and
  those a command line overrode (`note_origin`).

  The file is the one the config was built from (`origin`), read again; for a config without
  that note (a copy, one built by hand or read from a run's config.json), a key counts as set
  where its value is none of those the config files give the same model and dataset
  (`_file_configs`): a value some file gives is taken for the file's.

  Args:
    config: the experiment config.
    base: the config to compare with (default: as above).
  Returns:
    Dotted keys, e.g. ["data.path", "model.zf_dim"].
  """
  bases = [base] if base is not None else []
  spec = origin(config)
  if not bases and spec is not None:
    try:
      bases = [get_config(spec)]
    except Exception:  # pylint: disable=broad-except  (the file changed since, or is gone)
      bases = []
  bases = bases or _file_configs(config)
  typed = getattr(config, _ORIGIN, (None, ()))[1] if spec is not None else ()
  return [k for k in leaf_paths(config) if k in typed
          or all(value_at(b, k) != value_at(config, k) for b in bases)]


def ignored_settings(config: ml_collections.ConfigDict, keys: Sequence[str],
                     prefix: str = "config.") -> list[tuple[str, str]]:
  """Of `keys`, those the config's model or dataset ignores, each with what to do instead:
  a CVAE's zf_dim, data.path for the synthetic data, a disCVAE's num_sample_cols, scan_unroll
  with one step per dispatch, data.mask_net without masks. A value for such a key would be
  taken, do nothing, and be recorded in the run's config.json as though it had.

  Args:
    config: the experiment config.
    keys: dotted keys the caller set, e.g. "data.path", "data.mask_net.steps".
    prefix: how the message names a key: "--config." (train.py) or "config." (Python).
  Returns:
    (key, "has no effect ...; remove it, or ...") for each; [] where none is ignored. Names
    that are no model's or dataset's are left to `validate_config`.
  """
  cli = prefix.startswith("-")
  drop, give = ("remove it", "pass") if cli else ("leave it at the config file's value", "set")
  found = []
  for key in dict.fromkeys(keys):
    first, _, rest = key.partition(".")
    for section, chooser, what, users_of, names in (
        ("model", "model", "model", MODEL_KEY_USERS, MODEL_NAMES),
        ("data", "data", "dataset", DATA_KEY_USERS, DATASETS),
        ("", "model", "model", TOP_KEY_USERS, MODEL_NAMES)):
      sub = (rest.split(".")[0] if first == section else None) if section else (
          key if "." not in key else None)
      name = value_at(config, f"{chooser}.name")
      if sub is None or name not in names or name in users_of.get(sub, (name,)):
        continue
      if chooser == "model":  # As the file's variant (`name_variant_differences`).
        how = ("the config file's variant, --config=<file>:<model>" if cli else
               "the config file's variant, get_config(\"<file>:<model>\")")
      else:
        how = f"{prefix}{chooser}.name"
      found.append((key, f"has no effect on {chooser}.name={name!r} (it is read by "
                         f"{' or '.join(users_of[sub])} only); {drop}, or choose that "
                         f"{what} with {how}"))
    # One step per dispatch runs no scan (`train_lib.make_multi_step`): nothing to unroll.
    if key == "scan_unroll" and config.get("steps_per_dispatch") == 1:
      found.append((key, "has no effect with steps_per_dispatch=1 (it unrolls the loop of the "
                         f"steps fused into one dispatch); {drop}, or {give} "
                         f"{prefix}steps_per_dispatch=N (N > 1, dividing the log, eval and "
                         "checkpoint intervals) too"))
    # LFW's mask network runs only where masks are used (a CVAE on configs/lfw.py has none).
    data = config.get("data")
    if (first == "data" and rest.split(".")[0] == "mask_net" and hasattr(data, "get")
        and not data.get("masks", True) and not any(k == key for k, _ in found)):
      found.append((key, "has no effect with data.masks=False (the mask network makes the "
                         f"masks of the faces without part labels); {drop}, or {give} "
                         f"{prefix}data.masks=True (configs/lfw.py:discvae sets it)"))
  return found


def name_variant_differences(config: ml_collections.ConfigDict, spec: str,
                             given: Sequence[str]) -> Optional[tuple[str, str, list[str]]]:
  """Where model.name was set to NAME and the config file `spec` has a variant for NAME that
  sets more than the name, the settings of that variant the config lacks: they stay those the
  file gives its other model (configs/lfw.py with model.name="discvae" keeps the CVAE's
  26,600 steps and the reference composite; configs/lfw.py:discvae sets 21,280 and the
  layered one). Keys in `given`, and those the model ignores, are not compared.

  Args:
    config: the experiment config.
    spec: the `--config` value it was built from.
    given: the keys the caller set (typed overrides, or `set_keys`).
  Returns:
    (the variant's spec, the file's own model.name, ["key: V there, W here", ...]), or None
    where nothing differs (or model.name was not set, or the file has no such variant).
  """
  name = value_at(config, "model.name")
  if "model.name" not in given or not isinstance(name, str):
    return None
  path = spec.partition(":")[0]
  try:
    variant, base = get_config(f"{path}:{name}"), get_config(spec)
  except Exception:  # pylint: disable=broad-except
    return None  # No such variant (or none at all): the name is the setting's alone.
  if variant.model.name != name or base.model.name == name:
    return None
  ignored = {f"model.{k}" for k in unused_model_keys(name)}
  differ = [f"{k}: {value_at(variant, k)!r} there, {value_at(config, k)!r} here"
            for k in leaf_paths(variant) if k not in given and k not in ignored
            and value_at(variant, k) != value_at(config, k)]
  return (f"{path}:{name}", base.model.name, differ) if differ else None


def check_set_keys_used(config: ml_collections.ConfigDict,
                        run_config: Optional[ml_collections.ConfigDict] = None) -> None:
  """Refuses a config whose settings changed from the config file's (`set_keys`) include one
  the model or dataset ignores (`ignored_settings`), or a model.name that leaves the settings
  the file gives its other model (`name_variant_differences`): the run would train without
  them and record them in config.json as though it had not. train.py refuses the same
  settings as typed on its command line.

  A resume (`run_config` given) is refused only for a setting that differs from the run's
  config.json too: a run trained with such a value (before this check, or with a config file
  that has changed since) resumes as before (was refused, though nothing was set; read-through).

  Args:
    config: the experiment config (its keys checked by `check_keys`).
    run_config: the resumed run's config.json (`checkpoints.load_config`), or None.
  Raises:
    ConfigError: naming the key, its value, and what to do.
  """
  given = set_keys(config)
  if run_config is not None:  # Its model and data were compared with the run's already.
    run = with_defaults(run_config)  # A value typed as the run has it is the run's too.
    given = [k for k in given if value_at(run, k) != value_at(config, k)]
  spec = origin(config) if run_config is None else None
  found = name_variant_differences(config, spec, given) if spec is not None else None
  if found is not None:
    variant, base_name, differ = found
    shown = "; ".join(differ[:3]) + (f"; {len(differ) - 3} more" if len(differ) > 3 else "")
    raise ConfigError(f"config.model.name={value_at(config, 'model.name')!r} changes the name "
                      f"alone: the other settings stay those {spec} gives "
                      f"model.name={base_name!r}, and its variant {variant} sets more "
                      f"({shown}); build the config with get_config({variant!r}) instead, then "
                      "make your other changes.")
  ignored = ignored_settings(config, given)
  if ignored:
    key, words = ignored[0]
    raise ConfigError(f"config.{key}={value_at(config, key)!r} {words} (it would be "
                      "recorded in the run's config.json as though it had been used).")


def unused_model_keys(name: str) -> tuple[str, ...]:
  """The config.model keys that model `name` ignores (`MODEL_KEY_USERS`).

  Args:
    name: config.model.name.
  Returns:
    The keys; () for a name that is not a model's (validate_config refuses it).
  """
  if name not in MODEL_NAMES:
    return ()
  return tuple(k for k, users in MODEL_KEY_USERS.items() if name not in users)


def value_at(cfg: Any, dotted: str) -> Any:
  """The value at a dotted path of a config (or section), e.g. "data.augment.flip"; None where
  a key is missing.

  Args:
    cfg: a ConfigDict or dict.
    dotted: the path.
  Returns:
    The value, or None.
  """
  for part in dotted.split("."):
    cfg = cfg.get(part) if hasattr(cfg, "get") else None
  return cfg


def leaf_paths(cfg: Any, prefix: str = "") -> Iterator[str]:
  """The dotted paths of every value of a config (not of its sections).

  Args:
    cfg: a ConfigDict or dict.
    prefix: prepended to every path.
  Yields:
    e.g. "model.width", "data.augment.flip".
  """
  for key, value in cfg.items():
    path = f"{prefix}{key}"
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      yield from leaf_paths(value, path + ".")
    else:
      yield path


def configs_dir() -> str:
  """The directory of the config files.

  `$A2I_JAX_CONFIGS` if set; otherwise `configs/` beside the `a2i_jax` package (the
  repository, with the README's editable install); otherwise `./configs`.

  Returns:
    An absolute path.
  Raises:
    ConfigError: none of these exists, or A2I_JAX_CONFIGS is set to a folder without
      default.py.
  """
  chosen = os.environ.get("A2I_JAX_CONFIGS", "")
  if chosen and not os.path.isfile(os.path.join(chosen, "default.py")):
    # Was: passed over without a word, and the repository's files were used instead.
    raise ConfigError(f"A2I_JAX_CONFIGS={chosen} holds no default.py; set it to a configs/ "
                      "folder (one with default.py), or unset it.")
  candidates = [chosen,
                os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "configs"),
                os.path.join(os.getcwd(), "configs")]
  for path in candidates:
    if path and os.path.isfile(os.path.join(path, "default.py")):
      return os.path.abspath(path)
  raise ConfigError("cannot find the configs/ directory (with default.py): install the "
                    "repository with pip install -e . as the README says, or set "
                    "A2I_JAX_CONFIGS to the path of its configs/ folder.")


def run_record_example(path: str) -> Optional[str]:
  """Whether the file `path` is a run's record of its config (the config.json train.py writes
  into its workdir, for infer.py) rather than a config file: its name ends in .json, or it
  parses as a JSON object. Run as Python it failed with "NameError: name 'true' is not
  defined ... fix the error there", advice that would damage the run's record (review
  finding).

  Args:
    path: the file given as a config.
  Returns:
    None where it is not such a record (or cannot be read: the load says why); else a config
    file to name instead, "configs/<the record's data.name>.py" where there is one, else
    "configs/synthetic.py".
  """
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    return None
  record = None
  try:
    if os.path.getsize(path) <= 1 << 22:  # A config file is small; a record too.
      with open(path, encoding="utf-8") as f:
        record = json.load(f)
  except (OSError, ValueError):  # Not JSON (a config file), or unreadable: the load says.
    pass
  if not isinstance(record, dict) and not path.lower().endswith(".json"):
    return None
  data = record.get("data") if isinstance(record, dict) else None
  name = data.get("name") if isinstance(data, dict) else None
  if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_]+", name) and os.path.isfile(
      os.path.join(configs_dir(), f"{name}.py")):
    return f"configs/{name}.py"
  return "configs/synthetic.py"


def load_config_module(path: str) -> ModuleType:
  """Loads a config file as a module, under a private name (not `configs.*`).

  Args:
    path: the .py file.
  Returns:
    The executed module (its `get_config` builds the config).
  Raises:
    ConfigError: the file does not exist, is a run's record of its config
      (`run_record_example`), or it (or a file it loads) has a syntax error.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isfile(path):
    raise ConfigError(f"no config file at {path}; pass one of the files in {configs_dir()} "
                      "(e.g. configs/synthetic.py).")
  example = run_record_example(path)
  if example is not None:
    raise ConfigError(f"{path} is a JSON file, a run's record of its config (train.py writes "
                      "config.json into the workdir, for infer.py), not a config file: load a "
                      f"config file instead, e.g. {example}, and change its settings there "
                      "(`inference.load_trained` serves the run itself).")
  name = "a2i_jax_configs." + os.path.splitext(os.path.basename(path))[0]
  # Read as Python source whatever the file's name ends in, as train.py's config flag reads it
  # (was: a file without ".py" an AttributeError's traceback from Python, "NoneType" has no
  # "loader", though train.py trained with it).
  spec = importlib.util.spec_from_loader(name, importlib.machinery.SourceFileLoader(name, path))
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:  # Was: "failed to load (SyntaxError: ...)" without the fix.
    raise ConfigError(f"the config file {e.filename or path} has a syntax error at line "
                      f"{e.lineno} ({e.msg}); fix the syntax error at line {e.lineno}.") from None
  return module


def load_sibling(file: str, name: str) -> ModuleType:
  """Loads the config file `name`.py from the directory of `file` (a config's `__file__`).

  Args:
    file: the calling config file's `__file__`.
    name: the sibling's name without ".py", e.g. "default".
  Returns:
    The sibling config module; where the calling file has none beside it (a config copied
    out of configs/ to edit), the one in `configs_dir()`. Was: "no config file at
    <copy's folder>/default.py", of a file the user never named (review).
  """
  path = os.path.join(os.path.dirname(os.path.abspath(file)), name + ".py")
  if not os.path.isfile(path):
    path = os.path.join(configs_dir(), name + ".py")
  return load_config_module(path)


def resolve_spec(spec: str) -> str:
  """A `--config` spec with its file found: the path as given where it is a file, else, for a
  bare name or a relative "configs/NAME", the file of that name in `configs_dir()`
  ("synthetic", "lfw.py", or "configs/lfw.py" given from another folder), else the path as
  given (its load then names it as missing).

  A ":" with nothing after it is dropped: the file's default, as `get_config` takes it (was:
  train.py passed "" to the file's get_config, "unknown model.name=''").

  Args:
    spec: "path[:arg]".
  Returns:
    "path[:arg]" with the path that `get_config` loads.
  Raises:
    ConfigError: the lookup in `configs_dir()` was needed and no configs/ folder is found,
      or the file's path holds a ":" (`--config` reads the first one as the start of the
      argument, so the file cannot be named; was "no config file at /runs/exp_12", for a
      file at /runs/exp_12:30/my.py).
  """
  path, _, arg = spec.partition(":")
  if not os.path.isfile(os.path.expanduser(path)):
    cut = [i for i, c in enumerate(spec) if c == ":"][1:] + [len(spec)]
    whole = next((spec[:i] for i in cut if spec[:i].endswith(".py")
                  and os.path.isfile(os.path.expanduser(spec[:i]))), None)
    if whole is not None:
      raise ConfigError(f"the path of the config file {whole} holds a ':', which --config "
                        "reads as the start of the file's argument (configs/lfw.py:discvae); "
                        "move or copy the file to a folder whose path has no ':'.")
  arg = arg.rstrip(":")  # "synthetic.py:cvae:" as "synthetic.py:cvae".
  # Only a bare name, or one under a relative "configs/": another folder's missing file is
  # named as missing (was: /tmp/exp/lfw.py, mistyped, trained configs/lfw.py without a word).
  if not os.path.isfile(os.path.expanduser(path)) and os.path.dirname(path) in ("", "configs"):
    bare = os.path.basename(path)
    found = os.path.join(configs_dir(), bare if bare.endswith(".py") else bare + ".py")
    path = found if bare and os.path.isfile(found) else path
  return path + (":" + arg if arg else "")


class CommandLine(list):
  """A command line as `normalised_command_line` returns it (a list of its arguments), with
  `typed`: how each argument was typed, by position ("-config.model.z_dim=16" where it holds
  "--config.model.z_dim=16", "--config synthetic" for "--config=/.../configs/synthetic.py"),
  so that the advice to a refused resume names what to drop or replace as the user typed it
  (`_typed_forms`). train.py puts it in sys.argv, where `train_lib` reads it.

  Was: a module-level record keyed by the normalised argument, in which two arguments typed
  apart that normalise alike ("-config.model.z_dim=16 --config.model.z_dim=16") were one, and
  the advice to drop them named one only (a second refusal).
  """

  def __init__(self, argv: Sequence[str], typed: Sequence[str]):
    super().__init__(argv)
    # `as_returned`: what `typed` fits; a line changed since reads as typed (`_typed_forms`).
    self.typed, self.as_returned = tuple(typed), tuple(argv)


def normalised_command_line(argv: list[str]) -> CommandLine:
  """train.py's command line in the one form its checks read: "--config..." for absl's
  "-config..." (and "-noconfig..."), and "--config=SPEC" for "--config SPEC", SPEC's file
  found as `resolve_spec` finds it ("--config=synthetic" as configs/synthetic.py, also from
  another folder).

  Was: a single-dash override passed the checks of ignored keys, and a bare name or the
  space form ended in "could not be parsed" or named the wrong file.

  "--config=SPEC" also moves to the front: absl refuses an override before it, one in a
  --flagfile too ("Found --config.x in argv before a value for --config was specified").

  Args:
    argv: sys.argv (the program first).
  Returns:
    The arguments with the same meaning to absl, as a `CommandLine`: its `typed` has how each
    was typed, by position.
  Raises:
    ConfigError: A2I_JAX_CONFIGS names a folder without default.py, or there is no --config
      (or it has no value) and no help flag or --flagfile that absl would read instead (was:
      "Unknown command line flag 'config.x'" for an override), or its file's path holds a
      ":" (`resolve_spec`), or --workdir or a non-bool --config.<key> is given without "="
      and the next argument is a flag (absl would take that flag as its value).
  """
  out, i = [(a, a) for a in argv[:1]], 1  # (argument, as typed), in order.
  while i < len(argv):
    arg = typed = argv[i]
    if arg == "--":
      out += [(a, a) for a in argv[i:]]
      break
    if arg.startswith(("-config", "-noconfig")):  # Absl's one-dash form of a config flag;
      arg = "-" + arg  # no other argument (a value "-runs" after --workdir stays as it is).
    if arg == "--config" and i + 1 < len(argv) and not argv[i + 1].startswith("-"):
      i += 1
      arg, typed = "--config=" + argv[i], f"{argv[i - 1]} {shlex.quote(argv[i])}"
    if i + 1 < len(argv) and _looks_like_a_flag(argv[i + 1]) and _takes_a_value(arg):
      # Absl takes the next argument as the value whatever it is (was: `--workdir
      # --config.seed=7` wrote the run into ./--config.seed=7/, and the seed stayed 0).
      name = arg.lstrip("-")
      raise ConfigError(f"--{name} has no value ({_next_is_a_flag(argv[i + 1])}); write "
                        f"--{name}=VALUE.")
    if arg.startswith("--config="):
      arg = "--config=" + resolve_spec(arg.split("=", 1)[1])
    out.append((arg, typed))
    i += 1
  end = next((j for j, (a, _) in enumerate(out) if a == "--"), len(out))
  head = out[1:end]
  names = [a for a, _ in head]
  specs = [a for a in names if a.startswith("--config=")]
  if not any(s != "--config=" for s in specs) and not any(
      a.startswith(("--help", "-help", "--flagfile", "-flagfile")) or a in ("-h", "-?")
      for a in names):
    what = "has no value" if "--config" in names or specs else "is missing"  # "--config=" too.
    raise ConfigError(f"--config {what}; pass --config=configs/<name>.py (e.g. "
                      "--config=configs/synthetic.py, or configs/lfw.py:discvae), then any "
                      "--config.<key>=<value> overrides.")
  # First of all: an override before it, also one in a --flagfile, which absl expands in
  # place, is refused ("Found --config.x in argv before a value for --config was specified").
  first = [p for p in head if p[0].startswith("--config=")]
  out = out[:1] + first + [p for p in head if not p[0].startswith("--config=")] + out[end:]
  return CommandLine([a for a, _ in out], [t for _, t in out])


def _typed_forms(argv: Sequence[str]) -> list[str]:
  """How each argument of the command line `argv` was typed, by position: its `typed` where
  `argv` is a `CommandLine` as `normalised_command_line` returned it (train.py's sys.argv);
  `argv` itself for any other (also one changed since: its record no longer fits)."""
  if isinstance(argv, CommandLine) and tuple(argv) == argv.as_returned:
    return list(argv.typed)
  return list(argv)


def expand_flagfiles(argv: list[str], flag_values: Any) -> list[str]:
  """The command line with each --flagfile replaced by the flags its file holds, as absl
  expands it when it parses.

  train.py's checks of the overrides read this (was: they read the line as typed, so an
  override in a --flagfile that does nothing, or a variant's name, trained without a word).

  Args:
    argv: sys.argv (the program first).
    flag_values: the absl `FlagValues` that parses it (which flags take a value decides where
      absl stops reading, as here).
  Returns:
    The program, then the arguments with every --flagfile expanded in its place.
  Raises:
    ConfigError: a --flagfile without a file name, or a file that cannot be read as text.
  """
  args = list(argv[1:])
  for i, arg in enumerate(args[:-1]):
    if arg in ("--flagfile", "-flagfile") and _looks_like_a_flag(args[i + 1]):
      # Absl would read the next flag as the file's name (was: "the --flagfile --config=x
      # cannot be read"; the read-through), as `normalised_command_line` refuses for others.
      raise ConfigError(f"--flagfile has no value ({_next_is_a_flag(args[i + 1])}); write "
                        "--flagfile=FILE.")
  try:
    return list(argv[:1]) + flag_values.read_flags_from_files(args, force_gnu=False)
  except UnicodeDecodeError as e:  # Absl catches only the open's OSError.
    # The file that failed, a nested one too (was: every --flagfile typed was named, the
    # text ones among them, and never a nested one; the read-through).
    given = [a.split("=", 1)[1] if "=" in a else "".join(args[i + 1:i + 2])
             for i, a in enumerate(args) if a.split("=", 1)[0] in ("--flagfile", "-flagfile")]
    bad = _undecodable_flagfile(given, set())
    raise ConfigError(f"the --flagfile {bad or ', '.join(given) or 'given'} is not a text file "
                      f"({e.reason} at byte {e.start}); pass a file of flags, one a "
                      "line.") from None
  except flags.Error as e:
    cause = e.__context__
    if isinstance(cause, OSError):  # Absl's words, "ERROR:: Unable to open flagfile: ...".
      raise ConfigError(f"the --flagfile {cause.filename} cannot be read "
                        f"({cause.strerror or cause}); check its path.") from None
    if isinstance(e, flags.IllegalFlagValueError):  # "--flagfile with no argument".
      raise ConfigError("--flagfile has no file name; write --flagfile=FILE.") from None
    raise ConfigError(f"{str(e).rstrip('.')}; see python train.py --helpfull.") from None


def _undecodable_flagfile(paths: list[str], seen: set) -> Optional[str]:
  """The first of the flagfiles `paths`, or of the flagfiles they name in turn, that does not
  decode as text, as absl opens them; None if none fails here."""
  for path in paths:
    if path in seen:
      continue
    seen.add(path)
    try:
      with open(path) as f:  # pylint: disable=unspecified-encoding  (absl's own open)
        lines = f.read().splitlines()
    except UnicodeDecodeError:
      return path
    except OSError:
      continue
    nested = [line.strip().split("=", 1)[1] for line in lines
              if line.strip().startswith(("--flagfile=", "-flagfile="))]
    found = _undecodable_flagfile(nested, seen)
    if found:
      return found
  return None


def _next_is_a_flag(arg: str) -> str:
  """Why the argument after a flag typed without "=" is not its value, for the message."""
  if arg == "--":
    return "the next argument, --, ends the flags"
  return f"the next argument {arg} is a flag"


def _looks_like_a_flag(arg: str) -> bool:
  """Whether a command-line argument is a flag rather than a value: "--x", absl's one-dash
  config flag "-config.x", or "-x=v". A bare "-1", "-1e3" or "-runs" is a value."""
  return (arg.startswith(("--", "-config", "-noconfig"))
          or re.match(r"-[A-Za-z][\w.]*=", arg) is not None)


def _takes_a_value(arg: str) -> bool:
  """Whether `arg` (a config flag normalised to two dashes) is --workdir or a `--config.<key>`
  of a non-bool key of configs/default.py given without "=", so that absl reads the next argument
  as its value. An unknown key is left to the message for a key that does not exist."""
  if arg in ("--workdir", "-workdir"):
    return True
  if not arg.startswith("--config.") or "=" in arg:
    return False
  key, reference = arg[len("--config."):], reference_config()
  return key in set(leaf_paths(reference)) and not isinstance(value_at(reference, key), bool)


def get_config(spec: str) -> ml_collections.ConfigDict:
  """A config from a file, as `--config=` takes it: "configs/lfw.py:discvae", "synthetic".

  Args:
    spec: a path to a config file (or a bare name such as "lfw" or "lfw.py", looked up in
      `configs_dir()`), optionally followed by ":" and the argument of its `get_config`.
  Returns:
    The ConfigDict.
  Raises:
    ConfigError: no such file, a syntax error in it, no get_config in it, an argument given to
      a get_config that takes none, none given to one that needs one (or one that needs
      more), or an argument that is not one of its variants (`check_variant`).
  """
  path, _, arg = resolve_spec(spec).partition(":")
  module = load_config_module(path)
  if not callable(getattr(module, "get_config", None)):  # Was: "failed to load
    # (AttributeError: ...)" without the fix.
    raise ConfigError(f"the config file {path} has no get_config; define get_config() "
                      "returning an ml_collections.ConfigDict (build it on configs/default.py, "
                      "as configs/synthetic.py does).")
  if arg and not inspect.signature(module.get_config).parameters:  # Was: a TypeError's
    # traceback printed inside train.py's error line.
    raise ConfigError(f"the config file {path} takes no argument (its get_config has no "
                      f"parameter); drop ':{arg}' from --config.")
  required = [p.name for p in inspect.signature(module.get_config).parameters.values()
              if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  if len(required) > (1 if arg else 0):  # Was: a TypeError ("missing 1 required positional
    # argument"), and train.py's line said to fix an error at no line of the file.
    if len(required) > 1:
      raise ConfigError(f"the get_config of {path} needs {len(required)} arguments "
                        f"({', '.join(required)}), but --config passes at most one (after a "
                        f"':'); give {', '.join(required[1:])} "
                        f"{'a default value' if len(required) == 2 else 'default values'} in "
                        "that file.")
    raise ConfigError(f"the get_config of {path} needs an argument ({required[0]}), but "
                      f"--config passes none; pass one after a ':' ({path}:<value>), or give "
                      f"{required[0]} a default value in that file (as configs/synthetic.py "
                      "does).")
  config = module.get_config(arg) if arg else module.get_config()
  check_is_config(config, path)
  check_variant(config, f"{path}:{arg}")
  # What the settings changed after it are told from (`set_keys`), wherever it is read.
  note_origin(config, os.path.abspath(path) + (f":{arg}" if arg else ""))
  return config


def check_variant(config: ml_collections.ConfigDict, spec: str) -> None:
  """Refuses a `--config` argument that the config file took for the model's name when it
  names no model ("configs/synthetic.py:dcvae"): the file's variants are the models.

  Args:
    config: the config that `spec` gave (after any overrides).
    spec: the `--config` value, "path[:arg]".
  Raises:
    ConfigError: `arg` is config.model.name and not one of `MODEL_NAMES` (was: "unknown
      model.name='dcvae'", without a word of the suffix that set it).
  """
  path, _, arg = spec.partition(":")
  if arg and value_at(config, "model.name") == arg and arg not in MODEL_NAMES:
    variants = [f":{name}" for name in MODEL_NAMES]
    raise ConfigError(f"the config file {path} has no variant ':{arg}' (it sets "
                      f"model.name={arg!r}, which is no model); choose the variant with "
                      f"{', '.join(variants[:-1])} or {variants[-1]}.")


def model_variant(spec: str, name: str) -> Optional[str]:
  """The `--config` value of the variant of `spec`'s config file for the model `name`, where
  the file has one: "configs/lfw.py:discvae" for ("configs/lfw.py", "discvae").

  Args:
    spec: a `--config` value, "path[:arg]" ("" for none).
    name: a model's name (config.model.name).
  Returns:
    "path:name", or None where the file takes no such argument or its config for it names
    another model (or the file does not load).
  """
  path = spec.partition(":")[0]
  if not path or name not in MODEL_NAMES:
    return None
  variant = f"{path}:{name}"
  try:
    config = get_config(variant)
  except Exception:  # pylint: disable=broad-except
    return None  # No such variant, or a file that does not load: nothing to suggest.
  return variant if value_at(config, "model.name") == name else None


def variant_advice(argv: Sequence[str], run_model: Any, name: str,
                   ignore: Sequence[str] = ()) -> str:
  """The advice to a resume refused for another model.name: "the config file's variant of
  that model (--config=FILE:NAME ...)", where the config file of the command line `argv` has
  a variant for the run's model, with an override for each key the resume compares whose
  run's value the variant does not give, and without the command line's overrides of those
  keys (and of the keys the run's model ignores, which train.py refuses for it).

  Was: --config.model.name=NAME, which train.py then refuses for a config file with that
  variant (it changes the name alone; fault hunt); then the overrides of the keys that
  differed from the refused config only, so a run's override of a key that config's model
  ignores (model.z_dim=16 of a CVAE, resumed with a disCVAE) was left out, and the advice
  led to a second refusal (a read-through); then the flags to drop or replace were named in
  the form train.py normalises them to, not as typed ("--config.model.KEY" for
  "--noconfig.model.KEY", which was kept for a second refusal; `typed_model_overrides`).

  Args:
    argv: the command line, the program first (train.py's `sys.argv`: a `CommandLine`, whose
      record of how each argument was typed the advice names them by).
    run_model: the run's model section (its config.json's, with the defaults filled in).
    name: the model.name of the refused config.
    ignore: keys a resume may change, left out (train_lib's `RESUMABLE_MODEL_KEYS`).
  Returns:
    The advice; "" where the name does not differ or the file has no such variant.
  """
  run = run_model.to_dict() if hasattr(run_model, "to_dict") else dict(run_model)
  run_name = run.get("name")
  spec = config_flag_value(argv) if isinstance(run_name, str) and run_name != name else ""
  variant = model_variant(spec, run_name) if spec else None
  if variant is None:
    return ""
  model = get_config(variant).model.to_dict()
  # The keys the resume of the variant compares (`train_lib._check_resume_compatible`): not
  # those the run's model ignores, nor a y_dim of 0 that the data will fill in.
  unused = set(unused_model_keys(run_name))
  skip = {*ignore, *unused, *(("y_dim",) if not model.get("y_dim", 1) else ())}
  compared = [k for k in sorted(set(run) | set(model)) if k not in skip]
  flags = "".join(f" --config.model.{k}={shlex.quote(str(run[k]))}" for k in compared
                  if k in run and model.get(k) != run[k] and of_default_kind(f"model.{k}", run[k]))
  instead = [f"in place of {_typed_config_flag(argv)}"] if spec != variant else []
  # The command line's overrides of those keys, and of the ones train.py refuses.
  dropped = typed_model_overrides(argv, {*compared, *unused})
  if dropped:
    instead.append(f"without {', '.join(dropped)}")
  return (f"the config file's variant of that model (--config={variant}{flags}"
          f"{', ' + ' and '.join(instead) if instead else ''})")


def typed_model_overrides(argv: Sequence[str], keys: Any) -> list[str]:
  """The overrides of `keys` of the model section on the command line `argv`, as typed: the
  advice to drop them, taken literally, drops them.

  Was: "--config.model.KEY" for each, also for "--noconfig.model.KEY" (absl's false of a
  bool), which that advice then left in place for a second refusal, and for
  "--config.model.KEY VALUE", whose VALUE it left behind.

  Args:
    argv: the command line, the program first (none after a "--"), as typed or as
      `normalised_command_line` returned it (a `CommandLine`: read by its record of how each
      argument was typed, so that two typed apart that normalise alike are both named).
    keys: model keys, e.g. {"z_dim"}.
  Returns:
    Each once, in the order typed, as typed: the flag's name ("--config.model.z_dim" for
    "--config.model.z_dim=16", "--noconfig.model.block_kl_bg_grad_to_fg",
    "-config.model.z_dim" for "-config.model.z_dim=16", also where train.py normalised it),
    with its value where absl reads it from the next argument ("--config.model.z_dim 16").
  """
  args, found, i = _flag_arguments(argv), [], 0
  typed_args = _typed_forms(argv)[1:len(args) + 1]  # Parallel to `args`.
  while i < len(args):
    arg, typed, i = args[i], typed_args[i].split("=", 1)[0], i + 1
    key = _override_key(arg, "--config") or ""
    if key and "=" not in arg and i < len(args) and _takes_a_value(f"--config.{key}"):
      typed, i = f"{typed} {shlex.quote(args[i])}", i + 1  # "--config.model.z_dim 16".
    if key.startswith("model.") and key[6:] in keys and typed not in found:
      found.append(typed)
  return found


def _typed_config_flag(argv: Sequence[str]) -> str:
  """The last `--config` flag on the command line `argv` (none after a "--") as typed:
  "--config=SPEC", "--config SPEC" or "-config=SPEC", also where train.py normalised it."""
  args = _flag_arguments(argv)
  for i in reversed(range(len(args))):
    name = args[i].partition("=")[0]
    if name in ("--config", "-config"):
      if "=" in args[i] or i + 1 == len(args):
        return _typed_forms(argv)[i + 1]
      return f"{args[i]} {shlex.quote(args[i + 1])}"
  return "--config"


def _flag_arguments(argv: Sequence[str]) -> list[str]:
  """The arguments of the command line `argv` (the program first) that absl reads as flags:
  those before a "--"."""
  args = list(argv[1:])
  return args[:args.index("--")] if "--" in args else args


def check_is_config(config: Any, path: str = "") -> None:
  """Refuses anything but a ConfigDict (a config file's `get_config` that returns None or a
  dict), which the checks and the training loop would fail on with a traceback.

  Args:
    config: what a config file's `get_config` returned, or a config given to the Python API.
    path: the config file, for the message ("": a config given to the Python API).
  Raises:
    ConfigError: `config` is not an `ml_collections.ConfigDict`.
  """
  if not isinstance(config, ml_collections.ConfigDict):
    if not path:  # A caller of the Python API passed it.
      raise ConfigError(f"the config is a {type(config).__name__}, not an "
                        "ml_collections.ConfigDict; build it with a2i_jax.config_lib.get_config"
                        "(\"configs/synthetic.py\") (or another config file) and change its "
                        "keys there.")
    raise ConfigError(f"the get_config of {path} returned a {type(config).__name__}, not an "
                      "ml_collections.ConfigDict; make it return one (build it on "
                      "configs/default.py, as configs/synthetic.py does).")


def check_whole_config(config: Any, fn: str, sections: Sequence[str]) -> None:
  """Refuses what is not a whole experiment config with `sections`, as the Python API's
  functions that take one check it (was an AttributeError: "'model'" for `config.model`
  passed in its place, "'dict' object has no attribute ..." for a dict).

  Args:
    config: the config a caller of the Python API passed.
    fn: the function it was passed to, for the message (e.g. "load_run_data").
    sections: the sections it needs, e.g. ("model",).
  Raises:
    ConfigError: `config` is not an `ml_collections.ConfigDict`, or lacks one of `sections`
      or holds it as something other than a section (a section passed for the whole).
  """
  check_is_config(config)
  for section in sections:
    if section not in config:
      keys = ", ".join(sorted(map(str, config.keys()))[:5]) or "none"
      got = f"has no {section} section (its keys: {keys}, ...: a section of a config?)"
    elif not isinstance(config[section], ml_collections.ConfigDict):
      got = f"has a {section} of type {type(config[section]).__name__}, not a section"
    else:
      continue
    raise ConfigError(f"the config given to {fn} {got}; pass the whole experiment config, not "
                      "config.model or config.data: trained.config, or "
                      "inference.load_run_config(workdir).")


def reference_config() -> ml_collections.ConfigDict:
  """The full default config (configs/default.py): every valid key.

  Returns:
    A fresh ConfigDict.
  """
  return load_config_module(os.path.join(configs_dir(), "default.py")).get_config()


def check_keys(config: ml_collections.ConfigDict,
               reference: Optional[ml_collections.ConfigDict] = None) -> None:
  """The first of `validate_config`'s checks, in Python alone (no JAX): a config whose keys
  are those of configs/default.py, no more and no fewer.

  Args:
    config: the experiment config.
    reference: the config whose keys are the valid ones (default: configs/default.py).
  Raises:
    ConfigError: not a ConfigDict, a key the defaults lack (with the nearest valid one), or
      a key the config lacks.
  """
  check_is_config(config)
  reference = reference_config() if reference is None else reference
  known = set(leaf_paths(reference))
  given = list(leaf_paths(config))
  unknown = _first_unknown_key(given, known)
  if unknown:
    path, close = unknown
    hint = f" Did you mean {close!r}?" if close else ""
    raise ConfigError(f"config key {path!r} does not exist.{hint} The valid keys are in "
                      "configs/default.py.")
  # Refused rather than filled in: training would fail on the first one it reads, after the
  # data load, having written the run's record.
  missing = sorted(known - set(given))
  if missing:
    more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
    raise ConfigError(f"the config lacks the key(s) {', '.join(missing[:3])}{more}; build it on "
                      "configs/default.py (config_lib.load_sibling(__file__, \"default\")), "
                      "which sets every key, and change what differs.")


def validate_config(config: ml_collections.ConfigDict,
                    reference: Optional[ml_collections.ConfigDict] = None) -> None:
  """Every check of a training config, run once before any data loads or file is written.

  Raises `ConfigError` for a key the defaults do not have or a value that cannot work. The
  one check left to its caller is that `batch_size` splits over the devices
  (`parallel.check_batch_divisible`), which needs the device mesh.

  Args:
    config: the experiment config.
    reference: the config whose keys are the valid ones (default: configs/default.py).
  Raises:
    ConfigError: as `check_keys`, `check_values` and `check_attribute_count` say.
  """
  check_keys(config, reference)
  check_values(config)
  check_attribute_count(config)


# The datasets whose attribute count the config alone decides, for the messages.
_DATASET_TITLES = {"lfw": "LFW", "cub": "CUB", "synthetic": "synthetic"}


def known_attribute_count(data: Any) -> Optional[int]:
  """The number of attributes the dataset `data.name` has, where the config alone decides it.

  Args:
    data: `config.data`.
  Returns:
    73 for LFW, 312 for CUB (either `data.cub_attributes`), the synthetic data's 10; None for
    a folder dataset (its attributes.csv decides).
  """
  if data.name == "synthetic":
    return len(synthetic.ATTRIBUTE_NAMES)
  # From data.base, not lfw.py or cub.py: their import loads tensorflow_datasets (0.24 s).
  return data_base.ATTRIBUTE_COUNTS.get(data.name)


def check_attribute_count(config: ml_collections.ConfigDict) -> None:
  """Refuses a model.y_dim other than the dataset's attribute count where the config alone
  decides that count (`known_attribute_count`), before any data load: was found only after
  preparing the data (for CUB, a 1.15 GB download).

  Args:
    config: the experiment config, its values checked (`check_values`).
  Raises:
    ConfigError: the counts differ; the message names the --config.model.y_dim to pass.
  """
  count = known_attribute_count(config.data)
  if count is not None and config.model.y_dim != count:
    which = (f" (data.cub_attributes={config.data.cub_attributes!r})"
             if config.data.name == "cub" else "")
    raise ConfigError(f"config.model.y_dim={config.model.y_dim}, but the "
                      f"{_DATASET_TITLES[config.data.name]} data have {count} attributes"
                      f"{which}; pass --config.model.y_dim={count}.")


def check_served_values(config: ml_collections.ConfigDict) -> None:
  """The checks of what serving a trained run reads of its saved config: the kind of every
  value, the model and the inference settings. Not the training-only ranges, which later
  versions tightened: a run trained before a check existed stays usable.

  Args:
    config: a run's config (`with_defaults` of its config.json).
  Raises:
    ConfigError: a value that cannot work (a file edited by hand). (A value that passes the
      type check but not a conversion may raise TypeError or ValueError instead.)
  """
  check_no_unknown_keys(config)
  _check_types(config)
  _check_model(config.model, config.data.name)
  check_inference(config.inference)


def check_no_unknown_keys(config: Any,
                          reference: Optional[ml_collections.ConfigDict] = None) -> None:
  """Refuses a key that configs/default.py does not have (keys the config lacks are left to
  `with_defaults`). For a run's config.json edited by hand: a mistyped key there
  ("inference.stpes") was taken and ignored without a word, the default value used instead.
  (No key has been removed from configs/default.py, so no run's own config.json has one.)

  Args:
    config: a run's config (`with_defaults` of its config.json), or any config.
    reference: the config whose keys are the valid ones (default: configs/default.py).
  Raises:
    ConfigError: the message names the key, the nearest valid one, and says to rename or
      remove it.
  """
  reference = reference_config() if reference is None else reference
  # A section's name given a value, or a value given keys, is _check_types's to name.
  unknown = _first_unknown_key(leaf_paths(config), set(leaf_paths(reference)), misshapen=False)
  if unknown:
    path, close = unknown
    fix = f"rename it to {close!r} if that is the key meant, or remove it" if close \
        else "remove it"
    raise ConfigError(f"config key {path!r} does not exist (configs/default.py has the valid "
                      f"ones), so its value would be ignored; {fix}.")


def _first_unknown_key(paths: Any, known: set[str], misshapen: bool = True
                       ) -> Optional[tuple[str, Optional[str]]]:
  """(the first of `paths` not in `known`, the nearest known key or None), or None. Without
  `misshapen`, a path that names a known section, or lies under a known key, is not
  counted (a value where a section goes, or keys under a value: a type's mistake)."""
  sections = {p.rsplit(".", 1)[0] for p in known if "." in p}
  for path in paths:
    if path in known or not misshapen and (
        path in sections or any(path.startswith(k + ".") for k in known)):
      continue
    close = difflib.get_close_matches(path, sorted(known), n=1)
    return path, close[0] if close else None
  return None


def check_recorded_values(config: ml_collections.ConfigDict) -> None:
  """The checks of what a resume compares of a run's saved config (its config.json).

  The model section as serving checks it, and the data it names (a known source, a positive
  image size, the source's own settings). A value these refuse was written by hand or
  damaged: a resume that differs from it must not be told to pass it as an override (was:
  "--config.data.name=imagenet", and a width "abc" called "a different config"). Not the
  training-only ranges, which later versions tightened.

  Args:
    config: a run's config (`with_defaults` of its config.json).
  Raises:
    ConfigError: a value that cannot have trained the run. (A value that passes the type
      check but not a conversion may raise TypeError or ValueError instead.)
  """
  _check_types(config, sections=("model", "data"))
  _check_model(config.model, config.data.name)
  dc = config.data
  if dc.name not in data_base.DATASET_NAMES:  # Not "choose one of": no other one trained it.
    raise ConfigError(f"config.data.name={dc.name!r} is not a known source; the known ones "
                      f"are {', '.join(data_base.DATASET_NAMES)}")
  _check_positive(dc, ("image_size",), "config.data.")
  if dc.name == "cub":
    data_base.check_choice("data.cub_attributes", dc.cub_attributes, data_base.CUB_ATTRIBUTES)
  if dc.name == "synthetic":
    s = dc.synthetic
    synthetic.check_options(image_size=dc.image_size, num_train=s.num_train,
                            num_validation=s.num_validation, num_test=s.num_test, seed=s.seed)


def check_values(config: ml_collections.ConfigDict) -> None:
  """`validate_config`'s checks of the values alone (not of which keys there are).

  Args:
    config: the experiment config.
  Raises:
    ConfigError: a value that cannot work. (A value of the wrong type, e.g. a width "abc" in
      a hand-edited file, may raise TypeError or ValueError instead.)
  """
  _check_types(config)
  model = _check_model(config.model, config.data.name)
  _check_data(config, model.needs_masks)
  _check_loop(config)
  check_optimiser(config)
  check_predictor_settings(config.attribute_predictor)
  check_inference(config.inference)
  check_inference_for_model(config, model)


def check_predictor_settings(settings: Any, prefix: str = "config.attribute_predictor."
                             ) -> None:
  """The attribute predictor's settings, as `check_values` checks the config's and
  `attribute_predictor.train_predictor` checks those it trains with (one rule): steps,
  batch_size and width positive and at most int32's largest value, in which the device code
  holds them; learning_rate a finite number above 0 that float32, in which the predictor's
  optimiser computes, holds (neither past its range nor below its smallest normal number,
  which the device flushes to 0: 1e-40 trained nothing). Was: `train_predictor` tested the
  learning rate's range again, in its own words.

  Args:
    settings: `config.attribute_predictor`, or a mapping with its keys; steps, batch_size and
      width integers (`check_values` checks the kinds first, `train_predictor` its own), the
      learning_rate any value (a bool or a string is refused).
    prefix: what the messages put before a key's name ("attribute predictor: " for
      `train_predictor`'s).
  Raises:
    ConfigError: "{prefix}{key}={value} ..." for the first value out of its range.
  """
  for key in ("steps", "batch_size", "width"):
    _check_positive(settings, (key,), prefix)
    _check_int32(int(settings[key]), f"{prefix}{key}")
  rate = settings["learning_rate"]
  if not is_positive_finite(rate):
    raise ConfigError(f"{prefix}learning_rate={rate!r} is not valid; pass a positive finite "
                      "number (e.g. 1e-3).")
  _check_float32(settings, "attribute_predictor.learning_rate",
                 "the predictor's optimiser computes", name=f"{prefix}learning_rate")


def is_positive_finite(value: Any) -> bool:
  """The rule for a learning rate's kind and range, the attribute predictor's
  (`check_predictor_settings`) and the mask net's (`face_masks.MaskNetConfig`): a number (an
  integer or a float, not a bool nor a string) above 0 and finite. Was: the mask net's its own
  copy.

  Args:
    value: any value.
  Returns:
    Whether it is one.
  """
  return (isinstance(value, (int, float, np.integer, np.floating))
          and not isinstance(value, (bool, np.bool_)) and 0 < value < math.inf)


def _check_int32(value: int, name: str) -> None:
  """Refuses a count or size past int32's largest value, in which the device code holds it
  (was: an OverflowError's traceback from the train step for a batch_size of 2**31; a
  review). `name`: the key as the message names it ("config.batch_size")."""
  if value > INT32_MAX:
    raise ConfigError(f"{name}={value:,} is past int32's largest value, {INT32_MAX:,}, in "
                      "which the device code holds it; use a smaller one.")


def _kind(value: Any) -> Optional[str]:
  """"a bool", "an integer", "a number" or "a string": what a key of that default takes."""
  for kind, type_ in (("a bool", bool), ("an integer", int), ("a number", float),
                      ("a string", str)):  # bool first: True is an int too.
    if isinstance(value, type_):
      return kind
  return None


def of_default_kind(path: str, value: Any,
                    reference: Optional[ml_collections.ConfigDict] = None) -> bool:
  """Whether `value` is of the kind the default of `path` is (an integer also where a number
  is taken): one that `--config.<path>=<value>` can set.

  Args:
    path: a dotted key, e.g. "model.width".
    value: the value.
    reference: the defaults (default: configs/default.py).
  Returns:
    False also for a key the defaults lack.
  """
  reference = reference_config() if reference is None else reference
  want = _kind(value_at(reference, path))
  return want is not None and _is_kind(value, want)


def _is_kind(value: Any, want: str) -> bool:
  """Whether `value` is of the kind `want` (`_kind`'s words), an integer also where a number
  is taken."""
  got = _kind(value)
  return got == want or want == "a number" and got == "an integer"


# What an override of a key of each kind must be, for `explain_override_value`.
_OVERRIDE_KINDS = {"a bool": "true or false", "an integer": "an integer",
                   "a number": "a number", "a string": "a string"}


def unknown_key_words(key: str, keys: Sequence[str], prefix: str = "--config.") -> str:
  """The words for an override of a key a config lacks, with the closest key it has.

  Args:
    key: the dotted key overridden, e.g. "model.widht".
    keys: the config's keys (`leaf_paths`).
    prefix: what the command line puts before a key ("--config."; "" for a script's bare
      key=value overrides).
  Returns:
    e.g. "config key 'model.widht' does not exist. Did you mean --config.model.width? The
    valid keys are in configs/default.py."
  """
  close = difflib.get_close_matches(key, sorted(keys), n=1)
  hint = f" Did you mean {prefix}{close[0]}?" if close else ""
  return f"config key {key!r} does not exist.{hint} The valid keys are in configs/default.py."


def override_kind_words(key: str, value: str, default: Any,
                        prefix: str = "--config.") -> Optional[str]:
  """The words for an override whose value is not of the kind of the key's default.

  Args:
    key: the dotted key, e.g. "batch_size".
    value: the value as typed.
    default: the config's value at `key`, whose kind the override must have.
    prefix: what the command line puts before a key ("--config."; "" for bare key=value).
  Returns:
    e.g. "config.batch_size must be an integer (e.g. --config.batch_size=32), not '4.0'.";
    None for a default of no kind an override can take.
  """
  kind = _kind(default)
  if kind is None:
    return None
  if kind == "a bool":
    example = f"{prefix}{key}=true or {prefix}{key}=false"
  else:
    example = f"e.g. {prefix}{key}={default}"
  return f"config.{key} must be {_OVERRIDE_KINDS[kind]} ({example}), not {value!r}."


def explain_override_value(message: str, config: ml_collections.ConfigDict,
                           argv: tuple[str, ...] = (), flag: str = "--config") -> Optional[str]:
  """The one line for absl's refusal of an override's value, which names no fix (was, e.g.,
  "flag --config.batch_size=4.0: invalid literal for int() with base 10: '4.0'").

  Args:
    message: the text of absl's flag error.
    config: the config the override applies to: the kind of its value at the key is the
      kind the override must be.
    argv: the command line, where the value is read whole (absl's message is cut at its
      first ": ", which a value may hold).
    flag: the config flag's name with its dashes, as the script defines it ("--config").
  Returns:
    e.g. "config.batch_size must be an integer (e.g. --config.batch_size=32), not '4.0'.";
    None for a message that names no override of a key of `config`.
  """
  bare = re.escape(flag.lstrip("-"))
  match = re.match(rf"flag --(?:no)?{bare}\.([\w.]+)=(.*?): ", message)
  if match is None:
    return None
  key, value = match.groups()
  given = [a.split("=", 1)[1] for a in argv if a.startswith(f"{flag}.{key}=")]
  value = given[-1] if given else value
  return override_kind_words(key, value, value_at(config, key), f"{flag}.")


def config_flag_value(argv: Sequence[str], flag: str = "--config") -> str:
  """The value of a config flag on a command line, the last one given as absl takes it:
  `--config=SPEC` or `--config SPEC`, with one dash too; none after a "--".

  Args:
    argv: the command line, the program first.
    flag: the config flag's name with its dashes, as the script defines it ("--config").
  Returns:
    The spec, e.g. "configs/lfw.py:discvae"; "" where the flag is not given.
  """
  args = _flag_arguments(argv)
  names = (flag, "-" + flag.lstrip("-"))
  specs = [arg.partition("=")[2] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
           for i, arg in enumerate(args) if arg.partition("=")[0] in names]
  return specs[-1] if specs else ""


def _override_key(arg: str, flag: str) -> Optional[str]:
  """The key an argument overrides under the config flag `flag` ("model.width" for
  "--config.model.width=1", "--noconfig.model.width" or "-config.model.width"); None for an
  argument that is no override."""
  name, bare = arg.split("=", 1)[0], flag.lstrip("-")
  for prefix in (f"--{bare}.", f"--no{bare}.", f"-{bare}.", f"-no{bare}."):
    if name.startswith(prefix):
      return name[len(prefix):]
  return None


def _line_in(error: BaseException, path: str) -> str:
  """" at line N" of the innermost frame of `error`'s traceback in the file `path`."""
  path = os.path.abspath(os.path.expanduser(path))
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == path]
  return f" at line {lines[-1]}" if lines else ""


def explain_config_flag_error(argv: Sequence[str], error: Exception, flag: str = "--config",
                              script: str = "train.py") -> str:
  """The one line for a command line that ml_collections' config flag could not parse, the
  same for train.py and the benchmark scripts: a config file that does not load (the
  library's `ConfigError`, or the file's own error with the line it stands at), an override
  of a key the config lacks (with the closest key), a value of the wrong kind
  (`explain_override_value`), else absl's words with the script's --helpfull.

  Args:
    argv: the command line, the program first.
    error: what the parse (absl's, ml_collections') or the config's first read raised.
    flag: the config flag's name with its dashes, as the script defines it ("--config"):
      the hints name it.
    script: the script as it is run, e.g. "benchmarks/train_step.py", for the help hint.
  Returns:
    The line, without "error: ", e.g. "config key 'model.widht' does not exist. Did you mean
    --config.model.width? The valid keys are in configs/default.py.".
  """
  spec = config_flag_value(argv, flag)
  # ml_collections wraps an exception of a config file's get_config in a flag error holding
  # the whole traceback (was: printed in the error line): the load below names it instead.
  if isinstance(error, flags.Error) and "Error whilst parsing config file" not in str(error):
    try:  # An override's value of the wrong kind: what the key takes (was absl's words only,
      # "invalid literal for int() with base 10: '4.0'").
      typed = explain_override_value(str(error), get_config(spec), tuple(argv), flag)
    except Exception:  # pylint: disable=broad-except
      typed = None
    return typed or f"{str(error).rstrip('.')}; see python {script} --helpfull."  # Absl's own.
  try:
    config = get_config(spec)  # Its ConfigError names a missing file.
  except ConfigError as e:
    return str(e)
  except Exception as e:  # pylint: disable=broad-except
    path = resolve_spec(spec).partition(":")[0]
    first = (str(e).strip().splitlines() or [""])[0]  # One line, whatever the file raised.
    return (f"the config file {spec} failed to load ({type(e).__name__}: {first})"
            f"{_line_in(e, path)}; fix the error there.")
  keys = sorted(leaf_paths(config))
  for arg in argv[1:]:
    key = _override_key(arg, flag)
    if key is not None and key not in keys and not any(k.startswith(key + ".") for k in keys):
      return unknown_key_words(key, keys, f"{flag}.")
  first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
  return f"the command line could not be parsed: {first}"


def _check_types(config: ml_collections.ConfigDict, sections: tuple[str, ...] = ()) -> None:
  """Each value of the kind its default has (an integer also where a number is taken). A
  ConfigDict built on configs/default.py enforces this itself; a run's config.json, read back
  as plain JSON, does not (was: e.g. model.width "abc" a traceback from the model's code).
  `sections`: only the keys under these top-level sections (default: every key)."""
  reference = reference_config()
  for path in leaf_paths(reference):
    if sections and path.split(".", 1)[0] not in sections:
      continue
    section, parts = config, path.split(".")
    for i, part in enumerate(parts[:-1]):  # Was: "'int' object is not iterable" for one.
      section = section.get(part)
      if section is not None and not hasattr(section, "get"):
        raise ConfigError(f"config.{'.'.join(parts[:i + 1])}={section!r} must be a section (a "
                          "mapping of keys).")
    if section is None or parts[-1] not in section:
      continue  # A key the config lacks: `check_keys`'s to name, or a default fills it.
    want, got = _kind(value_at(reference, path)), section[parts[-1]]
    if not (want is None or _is_kind(got, want)):  # None too (a JSON null): no default is.
      # A mapping as JSON has it (a ConfigDict's repr is YAML over lines; was cut to its first).
      shown = got.to_dict() if hasattr(got, "to_dict") else got
      raise ConfigError(f"config.{path}={shown!r} must be {want}.")


def _check_positive(section: Any, keys: tuple[str, ...], prefix: str) -> None:
  """Refuses a value of `keys` (in `section`) below 1. `prefix`: what the message puts before
  a key's name ("config.model.")."""
  for key in keys:
    if int(section[key]) < 1:
      raise ConfigError(f"{prefix}{key}={section[key]} must be a positive integer.")


def _check_above(section: Any, path: str, low: float, inclusive: bool = False,
                 high: Optional[float] = None, name: Optional[str] = None) -> None:
  """Refuses a value that is not a finite number above `low` (and, if given, below `high`).

  Infinity is refused too: it would pass a bare comparison and end as a NaN loss later.
  `name`: the key as the messages name it (default "config.{path}").
  """
  given, name = section[path.rsplit(".", 1)[-1]], name or f"config.{path}"
  try:
    value = float(given)
  except (TypeError, ValueError):  # A schedule in a config built in Python: was a TypeError.
    raise ConfigError(f"{name}={given!r} must be a finite number.") from None
  if not math.isfinite(value):
    raise ConfigError(f"{name}={value} must be a finite number.")
  if not (value >= low if inclusive else value > low):
    raise ConfigError(f"{name}={value} must be {'>=' if inclusive else '>'} {low}.")
  if high is not None and not value < high:
    raise ConfigError(f"{name}={value} must be below {high}.")


# float32's smallest normal number (1.1755e-38): XLA flushes a smaller one to 0 on the device
# (NumPy keeps it), so 1e-38 was taken as adam_eps, and Adam divided 0 by 0 (a review).
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def _check_float32(section: Any, path: str, where: str, zero: str = "",
                   name: Optional[str] = None) -> float:
  """Refuses a value at `path` (under `section`) that is infinite in float32, in which
  `where` ("the optimiser computes"): a finite float64 there was taken and overflowed later;
  and a value other than 0 below float32's smallest normal number (`FLOAT32_TINY`), which the
  device computes as 0 (a learning rate that trains nothing, an adam_eps that divides by 0).
  `zero`: the words for 0 where it is allowed (" or 0 (no clipping)"); `name`: the key as the
  messages name it (default "config.{path}").
  Returns the float32 value, as a Python float."""
  value, name = float(section[path.rsplit(".", 1)[-1]]), name or f"config.{path}"
  with np.errstate(over="ignore"):
    single = float(np.float32(value))
  if not math.isfinite(single):
    raise ConfigError(f"{name}={value} is past float32's range (about 3.4e38), in "
                      f"which {where}; use a smaller value.")
  if 0 < abs(value) < FLOAT32_TINY:
    raise ConfigError(f"{name}={value} is below float32's smallest normal number "
                      f"(1.18e-38), in which {where}, so the device flushes it to 0; use at "
                      f"least 1.2e-38{zero}.")
  return single


def _check_model(mc: ml_collections.ConfigDict, data_name: str) -> Any:
  """The config.model checks; returns the model's module (`models.create_model`)."""
  if mc.name not in MODEL_NAMES:
    raise ConfigError(f"unknown model.name={mc.name!r}; choose one of "
                      f"{', '.join(MODEL_NAMES)}.")
  if mc.image_size not in (32, 64):  # The message is models.create_model's.
    raise ConfigError(f"model.image_size={mc.image_size} is not supported; use 64 (the paper) "
                      "or 32 (small variants).")
  # model.y_dim = 0: the attribute columns of a folder dataset's CSV, counted at training.
  if not (data_name == "folder" and mc.y_dim == 0):
    if data_name == "folder" and int(mc.y_dim) < 0:
      raise ConfigError(f"config.model.y_dim={mc.y_dim} must be 0 (the number of attribute "
                        "columns of attributes.csv) or a positive integer.")
    _check_positive(mc, ("y_dim",), "config.model.")
  # Only the keys this model reads: another model's (a CVAE config's zf_dim) change nothing.
  # Its width and latent sizes: `models.create_model`'s own checks, at the end.
  unused = unused_model_keys(mc.name)
  if "gate_loss_weight" not in unused:
    _check_above(mc, "model.gate_loss_weight", 0.0, inclusive=True)
    _check_float32(mc, "model.gate_loss_weight", "the loss is computed", " or 0")
  if "recon_weight" not in unused:
    _check_above(mc, "model.recon_weight", 0.0)
    # Infinite in float32: was a "divergence" at step 1, blamed on the learning rate.
    _check_float32(mc, "model.recon_weight", "the loss is computed")
  if mc.upsample_mode not in models.UPSAMPLE_MODES:
    raise ConfigError(f"model.upsample_mode={mc.upsample_mode!r} is not one of "
                      f"{', '.join(models.UPSAMPLE_MODES)}.")
  if "composition" not in unused and mc.composition not in models.COMPOSITIONS:
    raise ConfigError(f"model.composition={mc.composition!r} is not one of "
                      f"{', '.join(models.COMPOSITIONS)}.")
  # Checked as perf resolves them; backend="cpu" only so that checking starts no backend.
  perf.compute_dtype(mc.dtype, backend="cpu")
  perf.conv_weight_grad(mc.conv_weight_grad, backend="cpu")
  perf.decoder_tail(mc.get("decoder_tail", "auto"), backend="cpu")
  return models.create_model(mc)


def _check_data(config: ml_collections.ConfigDict, needs_masks: bool) -> None:
  """The config.data checks (each source's own, called as that source calls them)."""
  dc = config.data
  data_base.check_choice("data.name", dc.name, data_base.DATASET_NAMES)
  _check_positive(dc, ("image_size",), "config.data.")
  if dc.name == "synthetic":
    s = dc.synthetic
    synthetic.check_options(image_size=dc.image_size, num_train=s.num_train,
                            num_validation=s.num_validation, num_test=s.num_test, seed=s.seed)
  elif needs_masks and not dc.masks:
    raise ConfigError(f"model.name={config.model.name!r} needs foreground masks, but "
                      "data.masks=False; pass --config.data.masks=True (configs/lfw.py:discvae "
                      "and configs/cub.py set it).")
  data_base.check_choice("data.resize", dc.resize, data_base.RESIZE_MODES)
  data_base.check_choice("data.cub_attributes", dc.cub_attributes, data_base.CUB_ATTRIBUTES)
  face_masks.MaskNetConfig.from_config(dc.mask_net)
  _check_float32(dc.mask_net, "data.mask_net.learning_rate",
                 "the mask network's optimiser computes")
  aug = dc.augment
  for key in ("max_rotation", "max_sharpen"):
    _check_above(aug, f"data.augment.{key}", 0.0, inclusive=True)
  # Gains are drawn from U[1 - color_gain, 1 + color_gain): 1 or more allows a gain <= 0.
  _check_above(aug, "data.augment.color_gain", 0.0, inclusive=True, high=1.0)
  # Drawn on the device in float32 (`pipeline.augment`): 1e39 was infinity there, a NaN loss
  # at step 1 blamed on the learning rate (a review).
  for key in ("max_rotation", "max_sharpen", "color_gain"):
    _check_float32(aug, f"data.augment.{key}", "the augmentation draws", " or 0 (none)")
  if aug.max_rotation > math.pi:  # Was taken, 1e30 too: any angle, as at pi.
    raise ConfigError(f"config.data.augment.max_rotation={aug.max_rotation} is past pi: it is "
                      "in radians (angles drawn from U(-max_rotation, max_rotation)), and pi "
                      "already covers every angle; use at most 3.14159 (CUB: 0.08, about 4.6 "
                      "degrees; degrees x pi / 180).")
  if aug.max_sharpen > MAX_SHARPEN:  # Was taken, 1e30 too (a review).
    raise ConfigError(f"config.data.augment.max_sharpen={aug.max_sharpen} is past "
                      f"{MAX_SHARPEN:g}: the strength s ~ U[0, max_sharpen) of x + s (x - "
                      "blur(x)) (5x5 box blur), and past that the added edges dwarf the image "
                      f"(the reference: 1.5); use at most {MAX_SHARPEN:g}.")
  if not 0 <= aug.crop_size <= dc.image_size:
    raise ConfigError(f"config.data.augment.crop_size={aug.crop_size} must be 0 (no crop) or "
                      f"at most data.image_size={dc.image_size}.")
  crop = aug.crop_size or dc.image_size
  if crop != config.model.image_size:
    raise ConfigError(f"the images reaching the model are {crop}x{crop} (data.image_size / "
                      f"data.augment.crop_size) but model.image_size={config.model.image_size};"
                      " make them equal.")


MAX_SAMPLES_PER_GRID = 10_000  # The evaluation's sample grid: rows x columns.
# The largest data.augment.max_sharpen: the strength s of x + s (x - blur(x)) for images x in
# [0, 1]; at 10 the added edges reach ten times the image's range (the reference's is 1.5).
MAX_SHARPEN = 10.0


def _check_loop(config: ml_collections.ConfigDict) -> None:
  """The training loop's counts (steps, intervals, batch, evaluation and sample grid) and
  its seed."""
  _check_positive(config, ("num_train_steps", "log_every_steps", "eval_every_steps",
                           "checkpoint_every_steps", "steps_per_dispatch", "batch_size",
                           "max_checkpoints_to_keep", "num_sample_rows", "num_sample_cols"),
                  "config.")
  for key in ("num_train_steps", "log_every_steps", "eval_every_steps",
              "checkpoint_every_steps", "steps_per_dispatch"):
    if config[key] > INT32_MAX:  # The state's step is int32: was trained past it, wrapped to
      # negative, and every later resume refused the checkpoints as corrupt (a review).
      raise ConfigError(f"config.{key}={config[key]:,} is past the largest step count, "
                        f"{INT32_MAX:,} (the train state counts steps in int32); use fewer.")
  # The batch size the device code holds in int32 (the predictor's: `check_values`).
  _check_int32(config.batch_size, "config.batch_size")
  rows, cols, name = config.num_sample_rows, config.num_sample_cols, config.model.name
  if name in TOP_KEY_USERS["num_sample_cols"]:
    samples, what, fix = rows * cols, "num_sample_rows x num_sample_cols", "it"
  else:  # A model with image layers (the disCVAE) draws one sample per row, whatever
    # num_sample_cols (`train_eval.write_samples`; was refused with advice to lower that key,
    # whose override is then refused as having no effect).
    samples, what, fix = rows, "num_sample_rows", "num_sample_rows"
  if samples > MAX_SAMPLES_PER_GRID:  # Was: trained, then XLA aborted the run at the first
    # evaluation (exit 134, "Check failed: buffer_.IsConcrete()"), and every resume again.
    why = "" if fix == "it" else f" ({name} draws one per row; it reads no num_sample_cols)"
    raise ConfigError(f"config.{what} = {samples:,} samples per grid{why}, drawn at every "
                      f"evaluation in one call; make {fix} at most {MAX_SAMPLES_PER_GRID:,}.")
  k = config.steps_per_dispatch
  for key in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    if config[key] % k:
      raise ConfigError(f"config.{key}={config[key]} is not a multiple of "
                        f"steps_per_dispatch={k}; make it one.")
  seed = config.seed
  if not is_integer(seed) or not 0 <= seed <= MAX_SEED:
    raise ConfigError(f"config.seed={seed!r}; pass a whole number from 0 to {MAX_SEED}.")
  if config.num_eval_examples == 0 or config.num_eval_examples < -1:
    raise ConfigError(f"config.num_eval_examples={config.num_eval_examples}; use a positive "
                      "count or -1 (the whole validation split).")


def check_optimiser(config: ml_collections.ConfigDict) -> None:
  """Adam's settings and gradient clipping, as `validate_config` checks them; also
  `train_state.make_optimizer`'s own check, for callers from Python (a negative or NaN
  learning rate, adam_b1 = 1 were taken without a word).

  Args:
    config: the experiment config (learning_rate, adam_eps, weight_decay, grad_clip_norm,
      adam_b1, adam_b2).
  Raises:
    ConfigError: a key that is missing, not a finite number, or out of its range.
  """
  for key in ("learning_rate", "adam_eps", "weight_decay", "grad_clip_norm", "adam_b1",
              "adam_b2"):
    if key not in config:
      raise ConfigError(f"the config has no {key!r}; build it on configs/default.py "
                        "(config_lib.get_config), which sets every key.")
  _check_above(config, "learning_rate", 0.0)
  _check_above(config, "adam_eps", 0.0)
  for key in ("weight_decay", "grad_clip_norm"):  # grad_clip_norm 0 turns clipping off.
    _check_above(config, key, 0.0, inclusive=True)
  for key in ("adam_b1", "adam_b2"):
    if not 0 <= config[key] < 1:
      raise ConfigError(f"config.{key}={config[key]} must be in [0, 1).")
  # The optimiser computes in float32, where these were taken and meant something else (a
  # review): adam_b2=0.99999999 is 1.0 (Adam's bias correction divides by 0: a NaN loss at
  # step 2 blamed on the learning rate), weight_decay=1e300 infinity, and a positive
  # learning_rate, adam_eps or grad_clip_norm of 1e-50 zero (no training, a division by 0,
  # every gradient clipped to 0).
  # A positive value below float32's smallest normal number is 0 on the device too
  # (`_check_float32`): 1e-38 as adam_eps was a NaN loss at step 1 (a review).
  zero = {"weight_decay": " or 0 (no weight decay)", "grad_clip_norm": " or 0 (no clipping)",
          "adam_b1": " or 0", "adam_b2": " or 0"}
  for key in ("learning_rate", "adam_eps", "weight_decay", "grad_clip_norm", "adam_b1",
              "adam_b2"):
    value = float(config[key])
    single = _check_float32(config, key, "the optimiser computes", zero.get(key, ""))
    if key in ("adam_b1", "adam_b2") and single >= 1.0:
      raise ConfigError(f"config.{key}={value} is 1.0 in float32, in which the optimiser "
                        "computes (Adam's bias correction would divide by 0); use at most "
                        "0.9999999.")


def check_inference(values: Any) -> None:
  """Raises `ConfigError` for an invalid posterior-inference setting (`config.inference`).

  Args:
    values: the `config.inference` section, or any mapping of its keys (e.g. with overrides).
  """
  v = dict(values.to_dict() if hasattr(values, "to_dict") else values)

  def bad(key, allowed):
    raise ConfigError(f"inference.{key}={v[key]!r} is not valid; {allowed}.")

  def number(key, kind, allowed):
    # A value of another type (None, a string, True) set on a config in Python: was int()'s
    # TypeError traceback, or True taken as 1 (review).
    value = v[key]
    if isinstance(value, (bool, np.bool_)) or (
        kind is int and isinstance(value, float) and not value.is_integer()):
      bad(key, allowed)
    try:
      return kind(value)
    except (TypeError, ValueError, OverflowError):
      bad(key, allowed)
  # Counts the inference loop keeps in int32: a larger one overflowed deep inside JAX (a
  # 55-line traceback; review).
  counts = {"steps": (0, INT32_MAX, f"use 0 to {INT32_MAX} steps"),
            "restarts": (1, INT32_MAX, f"use 1 to {INT32_MAX} restarts"),
            "steps_per_call": (0, INT32_MAX, "use 0 (all the steps in one call) or a "
                                             f"positive count up to {INT32_MAX}"),
            "batch_size": (1, math.inf, "use at least 1 image per batch")}
  for key, (least, most, allowed) in counts.items():
    if key in v and not least <= number(key, int, allowed) <= most:
      bad(key, allowed)
  if "learning_rate" in v and not 0 < number(
      "learning_rate", float, "use a positive, finite learning rate") < math.inf:
    bad("learning_rate", "use a positive, finite learning rate")
  if "schedule" in v and v["schedule"] not in INFERENCE_SCHEDULES:
    bad("schedule", f"choose one of {INFERENCE_SCHEDULES}")
  for key in ("prior_weight", "attribute_prior_weight"):
    if key in v and not 0 <= number(key, float, "weights must be finite and >= 0") < math.inf:
      bad(key, "weights must be finite and >= 0")
  if "energy" in v and v["energy"] not in INFERENCE_ENERGIES:
    bad("energy", f"choose one of {INFERENCE_ENERGIES}")
  if "init" in v and v["init"] not in INFERENCE_INITS:
    bad("init", f"choose one of {INFERENCE_INITS}")
  # Inference computes in float32: 1e39 was recorded by train.py, then infer.py failed with
  # NumPy's overflow warning and "float images must ... hold NaN or infinity" (a review).
  for key, zero in (("learning_rate", ""), ("prior_weight", " or 0"),
                    ("attribute_prior_weight", " or 0")):
    if key in v:
      _check_float32(v, f"inference.{key}", "inference computes", zero)


def model_energy(energy: str, model: Any, where: str = "") -> str:
  """The energy `energy` (`config.inference.energy`) names for `model` ("auto": the model's
  default). The one rule of which model takes which energy: training's config check
  (`check_inference_for_model`) and inference (`inference.posterior.resolve_energy`) both
  call it; each model lists its own (`energies`, `default_energy`).

  Args:
    energy: one of `INFERENCE_ENERGIES`.
    model: the model's module or class (`models.create_model`; `energies`,
      `default_energy`).
    where: the file the setting was read from, for the message (infer.py: config.json).
  Returns:
    One of `model.energies`.
  Raises:
    ConfigError: an energy the model does not have.
  """
  resolved = model.default_energy if energy == "auto" else energy
  if resolved not in model.energies:
    name = model.__name__ if isinstance(model, type) else type(model).__name__
    why = " ('gaussian' needs a per-pixel variance head)" if resolved == "gaussian" else ""
    raise ConfigError(f"inference.energy={resolved!r}{f' in {where}' if where else ''} is not "
                      f"available for {name}{why}; use one of "
                      f"{', '.join(model.energies)} or 'auto' ({model.default_energy}).")
  return resolved


def check_inference_for_model(config: ml_collections.ConfigDict, model: Any) -> None:
  """Refuses a training config's inference setting that cannot take effect for its model,
  before anything is written: an energy the model does not have (`model_energy`; was taken,
  then refused by every inference mode after the training), `infer_attributes` on (a choice
  each use makes itself: infer.py turned it off for every mode but infer_attributes, which
  turns it on, and `inference.reconstruct` and the other uses stopped with "needs an
  attribute_prior", a prior no config holds), and an `attribute_prior_weight` other than the
  default for a model without attributes (the VAE: nothing of it is ever read).

  Args:
    config: the experiment config, its values checked (`check_inference` and the rest).
    model: the config's model (`models.create_model`).
  Raises:
    ConfigError: the message names the setting and what to pass instead.
  """
  values, name = config.inference, config.model.name
  model_energy(values.energy, model)
  if values.infer_attributes:
    raise ConfigError(
        "inference.infer_attributes=True cannot be a run's setting: infer.py turns it off for "
        "every mode but --mode=infer_attributes, which turns it on, and from Python each use "
        "that infers attributes needs a prior of them (inference.infer_attributes(trained, "
        "images, inference.AttributePrior.fit(train_attributes))); remove it.")
  default = reference_config().inference.attribute_prior_weight
  if not model.uses_attributes and float(values.attribute_prior_weight) != default:
    users = " or ".join(n for n in MODEL_NAMES if n != name)
    raise ConfigError(
        f"inference.attribute_prior_weight={values.attribute_prior_weight!r} has no effect on "
        f"model.name={name!r} (it weighs the prior of the attributes that {users} infer); "
        "remove it, or choose that model with the config file's variant, "
        "--config=<file>:<model>.")


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A saved config completed with the keys of configs/default.py it does not have.

  Runs trained before a config section existed (e.g. `inference`) get its default values.

  Args:
    config: a saved config (ConfigDict or dict).
  Returns:
    A new ConfigDict: the defaults overridden by every value of `config`.
  """
  def update(dst: dict, src: dict) -> None:
    for key, value in src.items():
      if isinstance(value, dict) and isinstance(dst.get(key), dict):
        update(dst[key], value)
      else:
        dst[key] = value

  merged = reference_config().to_dict()
  update(merged, config.to_dict() if hasattr(config, "to_dict") else dict(config))
  return ml_collections.ConfigDict(merged)
