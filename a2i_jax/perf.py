"""Backend-dependent choices: the compute dtype, the convolutions' weight-gradient method and
output blocks, the decoders' tail, the max-pooling form and the XLA:CPU compile options;
"auto" settings resolve here, in one function (docs/design.md §3.13).

None of them changes the function or the parameters, only how they are computed. The per-tap
weight gradient itself lives in `models/conv_grad.py`. Measured in benchmarks/ (BENCHMARKS.md
says what each choice bought and on what machine).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import math
import os
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Mapping, Optional

from absl import logging
import jax
import jax.numpy as jnp

from a2i_jax import files
from a2i_jax.errors import ConfigError

# The XLA:CPU flag that takes convolutions back from YNNPACK (to which jaxlib 0.10 hands every
# convolution and matrix product) to XLA's own kernels; the flag has no compile-option form
# (the option of that name takes a single kind, not the list less one, and "matrix products
# only" that way ran the train steps at 0.77-0.85x). XLA's own convolution is Eigen's, whose
# matrix product is oneDNN's sgemm, its instruction set chosen at run time (ONEDNN_MAX_CPU_ISA
# caps it; BENCHMARKS.md, "The AVX2 judge, emulated"). Which kernels are faster depends on the
# CPU: on a 2-core Intel Xeon (AVX-512) XLA's ran posterior inference's steps 1.07-1.17x faster,
# the paper disCVAE's train step about 1.1x and the synthetic CVAE's 1.56x (BENCHMARKS.md,
# "Convolutions without YNNPACK"). So `recommended_cpu_flags` times both on the machine itself,
# once per CPU model and jaxlib (`convolution_kernel_timing`), and adds the flag where XLA's
# are at least `XLA_CONVOLUTIONS_MIN_GAIN` times as fast.
XLA_CONVOLUTIONS_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
XLA_CONVOLUTIONS_MIN_GAIN = 1.05
# The flag that keeps them in YNNPACK's kernels whatever the timing says: with either flag in
# XLA_FLAGS nothing is measured (`recommended_cpu_flags`), so the kernels, and the numbers a
# run computes with them, are pinned (`CONVOLUTION_KERNEL_FLAGS`).
YNNPACK_CONVOLUTIONS_FLAG = "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
# `convolution_kernels`' answers: the XLA_FLAGS setting that pins each, and its words.
CONVOLUTION_KERNEL_FLAGS = {"xla": XLA_CONVOLUTIONS_FLAG, "ynnpack": YNNPACK_CONVOLUTIONS_FLAG}
CONVOLUTION_KERNEL_WORDS = {"xla": "XLA's own convolution kernels",
                            "ynnpack": "YNNPACK's convolution kernels"}
# `time_convolution_kernels` stops after `KERNEL_PROBE_MIN_ROUNDS` rounds (of up to its
# `rounds`) once the medians so far are clear of `XLA_CONVOLUTIONS_MIN_GAIN` by this factor
# either way. On an AVX2-only Zen 4, which timed the two sets 1.38-1.48x apart, the child
# took 6.1-6.3 s instead of 7.7-8.0 s (`benchmarks/kernel_probe.py`; BENCHMARKS.md, "The
# kernel probe stops early"). A close call still takes every round.
KERNEL_PROBE_CLEAR_BY = 1.10
KERNEL_PROBE_MIN_ROUNDS = 3
# What `convolution_kernel_timing` measures, in its answers' keys: a machine measures again
# when it changes. 2 (2026-12-04): the weight gradient timed too, each kernel library with the
# layer forms that go with it, at batch 8 (was 4); 3 (the same day): and the output heads in
# each decoder tail's form (`TIMED_HEADS`).
KERNEL_PROBE_VERSION = 3

# The convolutions `time_convolution_kernels` times, forward and both gradients, as
# (size, input channels, output channels, kernel), NHWC / HWIO with SAME padding: the paper
# models' kinds at width 1 (BENCHMARKS.md's benchmarks/conv_layers.py): the polyphase 3x3
# layers at 8, 16 and 32 px, the background decoder's 3x3, an encoder's 5x5; then the CVAE's
# output heads in the form the decoder tail takes with each kind of kernel (`decoder_tail`):
# with YNNPACK's the heads merged at full resolution (5x5, 64 -> 6 at 64 px: the one kind that
# ran faster in YNNPACK's kernels on an Intel Xeon), with XLA's one 3x3 convolution over the
# 2x2 phase blocks (4 x 64 -> 4 x 6 at 32 px).
TIMED_CONVOLUTIONS = ((8, 256, 1024, 3), (16, 256, 512, 3), (32, 128, 256, 3), (32, 64, 64, 3),
                      (32, 64, 128, 5))
TIMED_HEADS = {"ynnpack_ms": (64, 64, 6, 5), "xla_ms": (32, 256, 24, 3)}

# XLA:CPU compile options for every program the library jits (`jit`, `compiler_options`): the
# classic loop emitters for fused elementwise kernels instead of the newer MLIR fusion emitters
# (fewer, larger LLVM modules), and LLVM's optimisation level 1 instead of 3. Together they
# compile the paper train steps in 0.54x (CVAE) to 0.73x (disCVAE) the time at the same step
# time, measured on the paper and the synthetic models, train and inference (BENCHMARKS.md,
# "Cold compile with this round's compile options").
# Options this XLA does not know are dropped; an option the user names in XLA_FLAGS is left
# as the user set it.
CPU_COMPILER_OPTIONS: dict[str, Any] = {"xla_cpu_use_fusion_emitters": False,
                                        "xla_backend_optimization_level": 1}

COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")


def compute_dtype(name: str, backend: str | None = None) -> Any:
  """The compute dtype for `config.model.dtype`.

  "auto" is bfloat16 on TPU and GPU (their matrix units run bf16 at several times the f32
  rate) and float32 on CPU (XLA:CPU has no faster bf16 convolution path; it would only add
  conversions). Parameters and optimiser state are float32 whatever this returns.

  Args:
    name: "auto", "float32", "bfloat16" or "float16".
    backend: the JAX backend ("cpu", "gpu", "tpu"); default `jax.default_backend()`.
  Returns:
    A jnp dtype.
  Raises:
    ConfigError: an unknown name.
  """
  return jnp.dtype(_resolve("model.dtype", "a compute dtype", name, COMPUTE_DTYPES,
                            backend, cpu="float32", accelerator="bfloat16"))


def _resolve(key: str, what: str, name: str, choices: tuple[str, ...], backend: str | None,
             cpu: str, accelerator: str) -> str:
  """Checks `name` against `choices` and resolves "auto" by backend (CPU or not)."""
  if name not in choices:
    raise ConfigError(f"{key}={name!r} is not {what}; choose one of {', '.join(choices)}.")
  if name != "auto":
    return name
  return cpu if (backend or jax.default_backend()) == "cpu" else accelerator


def _flag_name(flag: str) -> str:
  """The name of an XLA flag: --xla_foo=1 -> xla_foo."""
  return flag.split("=", 1)[0].lstrip("-")


def _xla_flag_names() -> set[str]:
  """The names of the flags set in the XLA_FLAGS environment variable (`_xla_flags`)."""
  return {_flag_name(f) for f in _xla_flags().split()}


def _flag_file(value: str) -> Optional[str]:
  """The file XLA reads its flags from where XLA_FLAGS is `value`, or None: XLA takes a value
  whose first character other than a space is not "-" as a file's name, the whole value
  (`--xla_a=1`: flags; `/etc/xla_flags`: a file of them)."""
  return value if value.lstrip()[:1] not in ("", "-") else None


def _xla_flags() -> str:
  """The flags XLA reads from XLA_FLAGS: its value, or the contents of the file it names
  (`_flag_file`; "" where that cannot be read, which XLA refuses with its own message)."""
  value = os.environ.get("XLA_FLAGS", "")
  path = _flag_file(value)
  if path is None:
    return value
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      return f.read()
  except OSError:
    return ""


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
  """The CPU's model as the kernel describes it: its name, family and model numbers.

  Args:
    cpuinfo: the file to read it from (Linux's).
  Returns:
    e.g. "AMD EPYC 9B14 (family 25, model 17)", or an Arm CPU's implementer and part;
    "" where the file cannot be read or names none of them.
  """
  fields: dict[str, str] = {}
  try:
    with open(cpuinfo, encoding="utf-8", errors="replace") as f:
      for line in f:
        key, _, value = line.partition(":")
        if not key.strip():  # The first processor's block ends at a blank line.
          break
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    return ""
  if "CPU implementer" in fields:  # Arm: no model name; the implementer and part numbers.
    return (f"Arm implementer {fields['CPU implementer']}, part {fields.get('CPU part', '?')}, "
            f"variant {fields.get('CPU variant', '?')}")
  name = fields.get("model name") or fields.get("vendor_id", "")
  if not name:
    return ""
  return f"{name} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def convolution_kernel_programs(batch: int = 8) -> Optional[dict[str, list]]:
  """`TIMED_CONVOLUTIONS`' forward, input gradient and weight gradient, compiled for YNNPACK's
  kernels and for XLA's own, each in the forms the library runs with those kernels.

  "ynnpack_ms" is compiled with convolutions and matrix products on the list of operations
  XLA:CPU hands to YNNPACK (XLA's default list, less the reductions these programs lack), the
  layers in the CPU forms that go with YNNPACK's kernels (the weight gradient as per-tap
  matrix products); "xla_ms" with matrix products alone, which for these programs is what
  XLA_FLAGS' `XLA_CONVOLUTIONS_FLAG` does to a whole model, the layers in the forms that go
  with XLA's kernels (`conv_grad.cpu_conv_general_dilated`); each with its decoder tail's
  heads (`TIMED_HEADS`).
  Until 2026-12-04 the probe timed forward and input gradient at batch 4 in XLA's plain forms:
  on an Intel Xeon (family 6, model 167) it timed the two 4 % apart and kept YNNPACK's, and the
  paper disCVAE trained at 1.25-1.49x the PyTorch port's speed against 2.07x with XLA's
  kernels (BENCHMARKS.md, "A 2-core Intel Xeon with AVX-512 and AMX"). There the whole set at
  batch 4 still times 1.04-1.07x apart, at batch 8 1.34x, at 16 and 32 1.38x and 1.36x.

  Args:
    batch: images per convolution.
  Returns:
    {"ynnpack_ms": [(compiled, x, w), ...], "xla_ms": [...]}, one entry per convolution
    (`TIMED_CONVOLUTIONS`, then the heads), warmed up; None where this XLA has no YNNPACK
    (jaxlib 0.7.2).
  """
  from a2i_jax.models import conv_grad  # pylint: disable=import-outside-toplevel  # Imports perf.
  name = "xla_cpu_experimental_ynn_fusion_type"
  conv, dot = "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION", "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
  if not all(_option_known(name, kind) for kind in (conv, dot)):
    return None
  # Named in full, whatever this process's XLA_FLAGS say (a list replaces XLA's).
  kinds = {"ynnpack_ms": (False, {name: f"{conv},{dot}"}), "xla_ms": (True, {name: dot})}
  cpu = jax.devices("cpu")[0]
  programs: dict[str, list] = {key: [] for key in kinds}
  for i in range(len(TIMED_CONVOLUTIONS) + 1):
    for key, (xla_kernels, option) in kinds.items():
      size, cin, cout, k = (TIMED_CONVOLUTIONS + (TIMED_HEADS[key],))[i]
      x = jax.device_put(jnp.full((batch, size, size, cin), 0.5, jnp.float32), cpu)
      w = jax.device_put(jnp.full((k, k, cin, cout), 0.01, jnp.float32), cpu)
      conv_fn = conv_grad.cpu_conv_general_dilated(xla_kernels)

      def gradients(x, w, conv_fn=conv_fn, pad=k // 2):
        y, vjp = jax.vjp(lambda x, w: conv_fn(
            x, w, (1, 1), ((pad, pad), (pad, pad)), dimension_numbers=("NHWC", "HWIO", "NHWC")),
                         x, w)
        return vjp(y)
      compiled = jax.jit(gradients).lower(x, w).compile(
          compiler_options={**(compiler_options(backend="cpu") or {}), **option})
      jax.block_until_ready(compiled(x, w))  # The warm-up.
      programs[key].append((compiled, x, w))
  return programs


def time_convolution_kernels(batch: int = 8, rounds: int = 5) -> Optional[dict[str, float]]:
  """Times `convolution_kernel_programs` (YNNPACK's kernels against XLA's) in this process.

  Each convolution runs in both forms back to back, so that both see the same machine load;
  a round sums each form's times over the convolutions. After `KERNEL_PROBE_MIN_ROUNDS`
  rounds it stops where the medians so far settle the choice (`_kernel_rounds_settled`).
  About 6-7 s in all on a 2-core machine (a child's imports, 3-3.5 s compiling and warming
  up, 0.8 s a round).

  Args:
    batch: images per convolution.
    rounds: timed rounds of each set at most; the medians are compared.
  Returns:
    {"ynnpack_ms": ..., "xla_ms": ...}: each set's median round; None where this XLA has no
    YNNPACK (jaxlib 0.7.2).
  """
  programs = convolution_kernel_programs(batch)
  if programs is None:
    return None
  times: dict[str, list[float]] = {key: [] for key in programs}
  for _ in range(rounds):
    spent = dict.fromkeys(programs, 0.0)
    for i in range(len(programs["xla_ms"])):
      for key, calls in programs.items():  # Each convolution in both forms, back to back.
        compiled, x, w = calls[i]
        start = time.perf_counter()
        jax.block_until_ready(compiled(x, w))
        spent[key] += time.perf_counter() - start
    for key, seconds in spent.items():
      times[key].append(seconds)
    if _kernel_rounds_settled(times):
      break
  return {key: round(1e3 * statistics.median(t), 2) for key, t in times.items()}


def _kernel_rounds_settled(times: dict[str, list[float]]) -> bool:
  """Whether `time_convolution_kernels`' rounds so far settle the choice: at least
  `KERNEL_PROBE_MIN_ROUNDS` of them, their medians' ratio (YNNPACK's over XLA's) clear of
  `XLA_CONVOLUTIONS_MIN_GAIN` by `KERNEL_PROBE_CLEAR_BY` either way."""
  if len(times["xla_ms"]) < KERNEL_PROBE_MIN_ROUNDS:
    return False
  ratio = statistics.median(times["ynnpack_ms"]) / statistics.median(times["xla_ms"])
  line = XLA_CONVOLUTIONS_MIN_GAIN
  return not line / KERNEL_PROBE_CLEAR_BY < ratio < line * KERNEL_PROBE_CLEAR_BY


def convolution_kernel_timing(cache_file: Optional[str] = None,
                              timeout_s: float = 60.0) -> Optional[dict[str, float]]:
  """`time_convolution_kernels` on this machine, measured once per CPU model and jaxlib.

  It runs in a child process (about 7 s, most of it compiling and timing): XLA reads
  XLA_FLAGS when its backend starts, so the answer must come before this process starts its
  own. The child runs with XLA's defaults (no XLA_FLAGS), so that the answer depends on the
  machine alone. It is kept in `cache_file` under "convolution kernels", keyed by
  `cpu_model()`, the CPUs this process may use, the jaxlib version and
  `KERNEL_PROBE_VERSION`; delete the entry to measure again. Processes that start together
  on one machine wait for one measurement (a lock beside the file). A child that fails or
  times out gives None, and is kept as a failure for a day, so that each start does not wait
  for another.

  Args:
    cache_file: the answers file (`accepted_xla_flags`' too); None: its default; "" keeps none.
    timeout_s: how long the child may take.
  Returns:
    {"ynnpack_ms": ..., "xla_ms": ...}, or None where it could not be measured.
  """
  cache_file = _default_flag_cache() if cache_file is None else cache_file
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  key = f"{cpu_model()}, {cpus} CPUs, {jaxlib_version()}, probe {KERNEL_PROBE_VERSION}"

  with _cache_lock(cache_file):
    known = _cache_section(_read_cache(cache_file), "convolution kernels").get(key)
    if _valid_timing(known):
      return known
    if (isinstance(known, dict) and isinstance(known.get("failed_at"), (int, float))
        and 0 <= time.time() - known["failed_at"] < 86400):
      return None
    measured = _measure_in_child(timeout_s)
    _merge_into_cache(cache_file, "convolution kernels",
                      {key: measured or {"failed_at": int(time.time())}})
  return measured


def _say_always(message: str) -> None:
  """An INFO line that stays on a console set to warnings only (infer.py's default), as a
  plain line on stderr: the seconds it announces passed without a word there."""
  if logging.get_verbosity() >= logging.INFO:
    logging.info(message)
  else:
    print(message, file=sys.stderr, flush=True)


def _measure_in_child(timeout_s: float) -> Optional[dict[str, float]]:
  """`time_convolution_kernels()` in a child process with XLA's defaults; None on failure."""
  package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # oneDNN's ISA cap too (was inherited: a run under ONEDNN_MAX_CPU_ISA=AVX2, as
  # BENCHMARKS.md's emulation, cached its answer for the uncapped machine).
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "ONEDNN_MAX_CPU_ISA")}
  env["JAX_PLATFORMS"] = "cpu"
  # The child runs with -P (no current folder on its path), so it imports the a2i_jax this
  # process imported: from its own path, or, for a checkout run as a script, its folder.
  if not any(os.path.abspath(p or ".") == package_root for p in sys.path[1:]):
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
  code = ("import json; from a2i_jax import perf; "
          "print(json.dumps(perf.time_convolution_kernels()))")
  _say_always("Timing this CPU's convolution kernels, YNNPACK's against XLA's (once per CPU "
              "model, about 7 s).")
  try:
    done = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True,
                          timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)
    measured = json.loads(done.stdout.decode().strip().splitlines()[-1])
  except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
    measured = None
  if not _valid_timing(measured):
    logging.warning("Could not time this CPU's convolution kernels; keeping XLA's default "
                    "kernels (timed again in a day).")
    return None
  logging.info("Convolutions: YNNPACK's %.0f ms, XLA's %.0f ms.", measured["ynnpack_ms"],
               measured["xla_ms"])
  return measured


def _cache_lock(cache_file: str):
  """An exclusive lock on `cache_file` + ".lock" while held (`files.waiting_lock`); nothing
  for "" (no cache). A wait is said on a console set to warnings only too (`_say_always`):
  infer.py started while another process measured waited its seconds without a word (up to
  the children's timeouts; fault hunt)."""
  if not cache_file:
    return contextlib.nullcontext()
  return files.waiting_lock(cache_file + ".lock", f"measuring this machine for {cache_file}",
                            say=_say_always)


def _valid_timing(timing: Any) -> bool:
  return (isinstance(timing, dict) and set(timing) == {"ynnpack_ms", "xla_ms"} and all(
      isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
      for v in timing.values()))  # Finite: JSON's Infinity chose a form unmeasured (review).


def recommended_cpu_flags(cache_file: Optional[str] = None) -> tuple[str, ...]:
  """The XLA flags `set_recommended_xla_flags` adds on this CPU, chosen by measurement.

  Today one: `XLA_CONVOLUTIONS_FLAG`, where this jaxlib knows it (`accepted_xla_flags`) and
  XLA's own convolutions ran at least `XLA_CONVOLUTIONS_MIN_GAIN` times as fast as YNNPACK's
  on this CPU (`convolution_kernel_timing`, measured once per CPU model). Nothing is measured
  where the user's XLA_FLAGS already names the flag.

  Args:
    cache_file: the answers file of both; None: their default.
  Returns:
    The flags; () where none helps, or the measurement failed.
  """
  if _flag_name(XLA_CONVOLUTIONS_FLAG) in _xla_flag_names():
    return ()
  if not accepted_xla_flags((XLA_CONVOLUTIONS_FLAG,), cache_file):
    return ()
  timing = convolution_kernel_timing(cache_file)
  if timing and timing["ynnpack_ms"] >= XLA_CONVOLUTIONS_MIN_GAIN * timing["xla_ms"]:
    return (XLA_CONVOLUTIONS_FLAG,)
  return ()


def xla_convolutions() -> bool:
  """Whether this process's XLA_FLAGS take the convolutions from YNNPACK to XLA:CPU's own kernels.

  That is `XLA_CONVOLUTIONS_FLAG` (which `recommended_cpu_flags` adds where those time faster),
  or any setting of that flag that leaves "individual_convolution" out of XLA's list. XLA
  reads every copy of the flag in order: a list of kinds replaces the list, "+kind" / "-kind"
  entries change it; kinds are read without case and with or without the
  "LIBRARY_FUSION_TYPE_" prefix. The CPU forms `conv_weight_grad` and `decoder_tail` choose
  depend on it. (On jaxlib 0.7.2, which has no YNNPACK, nothing adds the flag.)

  Returns:
    True where the flags leave the convolutions to XLA's own kernels; False where they leave
    them to YNNPACK's (XLA's default) or do not say.
  """
  name = _flag_name(XLA_CONVOLUTIONS_FLAG)
  in_ynnpack = True  # XLA's default list holds the convolutions.
  for flag in _xla_flags().split():
    if "=" not in flag or _flag_name(flag) != name:
      continue
    for i, entry in enumerate(e.strip() for e in flag.split("=", 1)[1].split(",")):
      kind = entry.lstrip("+-").upper().removeprefix("LIBRARY_FUSION_TYPE_")
      if not entry.startswith(("+", "-")) and i == 0:
        in_ynnpack = False  # A list of its own replaces the list.
      if kind == "INDIVIDUAL_CONVOLUTION":
        in_ynnpack = not entry.startswith("-")
  return not in_ynnpack


# `convolution_kernels`' answer on CPU, taken the first time it is asked once the backend has
# started (XLA read XLA_FLAGS then, and its kernels stay those for the process); empty before.
_KERNELS_AT_START: list[str] = []


def convolution_kernels() -> Optional[str]:
  """Which kernels run this process's convolutions: "xla" (XLA:CPU's own) or "ynnpack".

  The numbers a computation gives depend on it (a 6-step train run differed in 56 of its 64
  checkpoint arrays; fault hunt), and the timing that chooses it (`recommended_cpu_flags`)
  can choose otherwise on the same machine (a busy host, another CPU count, a cleared
  cache). "xla" where XLA_FLAGS says so (`xla_convolutions`) or this XLA has no YNNPACK
  (jaxlib 0.7.2), else "ynnpack". `CONVOLUTION_KERNEL_FLAGS` pins either, in XLA_FLAGS
  before JAX starts. The answer is taken once, the first time it is asked after the backend
  started, and kept for the process: XLA read XLA_FLAGS as it started (was: read as it is
  now, so a flag set in a notebook after the start said "xla" while YNNPACK's ran; review).

  Returns:
    "xla" or "ynnpack" on CPU; None on another backend (a GPU's or TPU's convolutions are
    not XLA:CPU's).
  """
  if jax.default_backend() != "cpu":  # Starts the backend where it has not started.
    return None
  if _KERNELS_AT_START:
    return _KERNELS_AT_START[0]
  if xla_convolutions():
    kernels = "xla"
  else:
    known = _option_known("xla_cpu_experimental_ynn_fusion_type",
                          "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION")
    kernels = "ynnpack" if known else "xla"
  if _backend_started():  # False where this JAX cannot say: asked again next time.
    _KERNELS_AT_START.append(kernels)
  return kernels


def describe_convolution_kernels(kernels: str) -> str:
  """`convolution_kernels`' answer in words, e.g. "XLA's own convolution kernels".

  Args:
    kernels: "xla" or "ynnpack" (another value, as a damaged record holds it, is quoted).
  Returns:
    The words.
  """
  return CONVOLUTION_KERNEL_WORDS.get(kernels, f"convolution kernels {kernels!r}")


def _jaxlib_release() -> str:
  """This process's jaxlib version number, e.g. "0.10.2" (from jaxlib itself where its
  package has no metadata)."""
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    import jaxlib.version  # pylint: disable=import-outside-toplevel
    return jaxlib.version.__version__


def kernel_record() -> dict[str, Optional[str]]:
  """The kernels this process computes with, as data: on CPU the convolution kernels
  (`convolution_kernels`), and everywhere the backend and the jaxlib. A trained model's or
  predictor's numbers depend on them: the attribute predictor's meta.json ("trained_with")
  and a training run's kernels.json record them (`train_lib`), and `same_kernels` compares
  two. Was: words ("XLA's own convolution kernels, jaxlib 0.10.2"), parsed back to compare
  them and to choose the flag that pins them (review).

  Returns:
    {"kernels": "xla", "ynnpack" or None (off CPU), "backend": e.g. "cpu" or "gpu",
    "jaxlib": e.g. "0.10.2"}.
  """
  return {"kernels": convolution_kernels(), "backend": jax.default_backend(),
          "jaxlib": _jaxlib_release()}


def read_kernel_record(value: Any) -> Optional[dict[str, Optional[str]]]:
  """A kernel record as a file holds it, as `kernel_record` gives one: a record of its own
  form, or the words that `kernel_layout` wrote before records were data (e.g. "XLA's own
  convolution kernels, jaxlib 0.10.2" or "gpu, jaxlib 0.10.2").

  Args:
    value: what a kernels.json entry or a meta.json "trained_with" holds.
  Returns:
    The record, or None where `value` is none of those (unknown: compared with nothing).
  """
  if isinstance(value, dict):
    kernels, backend, jaxlib = (value.get(k) for k in ("kernels", "backend", "jaxlib"))
    if ((kernels is None or (isinstance(kernels, str) and kernels))
        and isinstance(backend, str) and backend and isinstance(jaxlib, str) and jaxlib
        and (kernels is None) == (backend != "cpu")):
      return {"kernels": kernels, "backend": backend, "jaxlib": jaxlib}
    return None
  if not isinstance(value, str) or value.count(", jaxlib ") != 1:
    return None
  first, jaxlib = value.split(", jaxlib ")
  if not jaxlib or " " in jaxlib:
    return None
  for kernels, words in CONVOLUTION_KERNEL_WORDS.items():
    if first == words:
      return {"kernels": kernels, "backend": "cpu", "jaxlib": jaxlib}
  if first.isalnum() and first != "cpu":  # Off CPU the words named the backend alone.
    return {"kernels": None, "backend": first, "jaxlib": jaxlib}
  return None


def describe_kernel_record(record: Optional[Mapping[str, Optional[str]]]) -> str:
  """A kernel record (`kernel_record`) in words: on CPU its convolution kernels, elsewhere its
  backend, and its jaxlib, e.g. "XLA's own convolution kernels, jaxlib 0.10.2" or "gpu,
  jaxlib 0.10.2".

  Args:
    record: from `kernel_record` or `read_kernel_record`; None: unknown.
  Returns:
    The words ("unknown kernels" for None).
  """
  if record is None:
    return "unknown kernels"
  kernels = record["kernels"]
  first = describe_convolution_kernels(kernels) if kernels else record["backend"]
  return f"{first}, jaxlib {record['jaxlib']}"


def kernel_layout() -> str:
  """The kernels this process computes with (`kernel_record`), in words, e.g. "XLA's own
  convolution kernels, jaxlib 0.10.2" on CPU or "gpu, jaxlib 0.10.2" elsewhere: for display;
  files record `kernel_record`'s data.

  Returns:
    The words.
  """
  return describe_kernel_record(kernel_record())


def same_kernels(a: Optional[Mapping[str, Optional[str]]],
                 b: Optional[Mapping[str, Optional[str]]]) -> Optional[bool]:
  """Whether two kernel records (`kernel_record`, `read_kernel_record`) name the same kernels,
  backend and jaxlib.

  Args:
    a: a record, or None (unknown).
    b: another.
  Returns:
    True or False; None where either is unknown (whether they differ cannot be said).
  """
  if a is None or b is None:
    return None
  return all(a[k] == b[k] for k in ("kernels", "backend", "jaxlib"))


def pin_kernels_advice(then: Optional[Mapping[str, Optional[str]]],
                       now: Optional[Mapping[str, Optional[str]]]) -> str:
  """How to run the convolution kernels of the record `then`, where they are all that differs
  from `now` (both `kernel_record`s of a CPU, with one jaxlib): a jaxlib or a backend cannot
  be pinned by a flag. The flag is added to XLA_FLAGS (replacing it would drop its other
  flags, e.g. --xla_force_host_platform_device_count) before JAX starts, when XLA reads it.

  Args:
    then: the record of the kernels something was computed with (None: unknown).
    now: this process's.
  Returns:
    E.g. "add --xla_cpu_experimental_ynn_fusion_type=-individual_convolution to XLA_FLAGS,
    keeping the flags it holds, before JAX starts (in a notebook: restart its kernel first)",
    or "" where no flag makes `now` into `then`.
  """
  if (then is None or now is None or then["backend"] != "cpu" or now["backend"] != "cpu"
      or then["jaxlib"] != now["jaxlib"] or then["kernels"] == now["kernels"]
      or then["kernels"] not in CONVOLUTION_KERNEL_FLAGS):
    return ""
  return (f"add {CONVOLUTION_KERNEL_FLAGS[then['kernels']]} to XLA_FLAGS, keeping the flags it "
          "holds, before JAX starts (in a notebook: restart its kernel first)")


def set_recommended_xla_flags(flags: Optional[tuple[str, ...]] = None,
                              cache_file: Optional[str] = None) -> str:
  """Appends `flags` to the XLA_FLAGS environment variable, keeping flags already set.

  Takes effect only if called before JAX starts its backend (before the first computation
  or `jax.devices()`); train.py, infer.py and benchmarks/bench.py call it first thing. A flag
  the user already set (by name, the part before "=") is left as the user set it. A flag this
  jaxlib's XLA does not know is left out (`accepted_xla_flags`): XLA would abort the process.
  The default flags are XLA:CPU ones, and none are added where a GPU or TPU plugin is
  installed (its XLA reads XLA_FLAGS too, and the probe does not ask it), nor where XLA_FLAGS
  names a file of flags (`_flag_file`), which XLA reads instead: a flag added after its name
  made XLA look for a file of that whole name and abort the process (was: a fatal log at the
  first computation; fault hunt). The file's flags count as the user's.

  Args:
    flags: XLA flags such as "--xla_cpu_use_onednn=true"; default `recommended_cpu_flags()`.
    cache_file: `accepted_xla_flags`' answers file; None for its default.
  Called after JAX started its backend, it warns and leaves XLA_FLAGS as it is.

  Returns:
    The resulting XLA_FLAGS (also set in `os.environ`), stripped of outer spaces; a file's
    name as it was.
  """
  current = os.environ.get("XLA_FLAGS", "")
  if _flag_file(current) is not None:
    return current
  if _backend_started():
    # XLA read XLA_FLAGS when its backend started: flags added now would change nothing but
    # `xla_convolutions`' answer, and the "auto" forms would follow kernels XLA does not run
    # (was: added without a word; review finding). A notebook's "Run all" after a computation.
    logging.warning("perf.set_recommended_xla_flags was called after JAX started its backend, "
                    "so XLA no longer reads XLA_FLAGS; restart the process (the notebook's "
                    "kernel) and call it before the first computation.")
    return current.strip()
  if flags is None:
    # A GPU or TPU plugin parses XLA_FLAGS with its own XLA, which the probe (CPU) does not
    # ask; and there the convolutions do not run on the CPU anyway.
    flags = () if _accelerator_plugin_installed() else recommended_cpu_flags(cache_file)
  names = _xla_flag_names()
  extra = [f for f in flags if _flag_name(f) not in names]
  if extra:
    extra = list(accepted_xla_flags(tuple(extra), cache_file))
  value = " ".join([current] + extra).strip()
  os.environ["XLA_FLAGS"] = value
  return value


def _backend_started() -> bool:
  """Whether JAX has started a backend (XLA has read XLA_FLAGS); False where this JAX cannot
  say (a private function, present in jax 0.7.2 to 0.10)."""
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def _accelerator_plugin_installed() -> bool:
  """Whether a JAX plugin for GPUs or TPUs is installed (libtpu, or a jax_plugins package)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  return any(importlib.util.find_spec(name) is not None
             for name in ("libtpu", "jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin"))


def jaxlib_version() -> str:
  """This process's jaxlib, e.g. "jaxlib 0.10.2" (`_jaxlib_release`; was "jax X" where jaxlib
  has no package metadata, a second way of reading the version).

  Returns:
    The words.
  """
  return "jaxlib " + _jaxlib_release()


def _read_cache(cache_file: str) -> dict[str, Any]:
  """The answers file as a dict; {} where it is off (""), missing, unreadable or not a dict."""
  if not cache_file:
    return {}
  try:
    with open(cache_file, encoding="utf-8") as f:
      cache = json.load(f)
  except (OSError, ValueError, RecursionError):  # Nested past Python's depth: as damaged.
    return {}
  return cache if isinstance(cache, dict) else {}


def _cache_section(cache: dict[str, Any], name: str) -> dict[str, Any]:
  """A copy of the answers file's section `name`; {} where it is missing or not a dict."""
  section = cache.get(name)
  return dict(section) if isinstance(section, dict) else {}


def _merge_into_cache(cache_file: str, name: str, entries: dict[str, Any]) -> None:
  """Adds `entries` to the answers file's section `name`, keeping what others wrote meanwhile.

  The caller holds `_cache_lock(cache_file)`; "" keeps no answers.
  """
  if not cache_file:
    return
  cache = _read_cache(cache_file)
  cache[name] = {**_cache_section(cache, name), **entries}
  _write_cache(cache_file, cache)


def _write_cache(cache_file: str, cache: dict[str, Any]) -> None:
  """Writes the answers file atomically; one that cannot be written is said once (each start
  would measure again: was silent, 10 s a start with a read-only home)."""
  try:
    os.makedirs(os.path.dirname(cache_file) or ".", exist_ok=True)
    files.atomic_write(cache_file, json.dumps(cache, indent=1, sort_keys=True))
  except OSError as e:
    _cannot_keep_answers(cache_file, str(e.strerror or e))


def _cannot_keep_answers(where: str, why: str) -> None:
  """Says once per place that the probe's answers cannot be kept there."""
  if where not in _UNWRITABLE:
    _UNWRITABLE.add(where)
    logging.warning("the CPU probe's answers cannot be kept in %s (%s), so each start "
                    "measures again (seconds); set XDG_CACHE_HOME to a folder you can write "
                    "to.", where, why)


_UNWRITABLE: set[str] = set()  # Places `_cannot_keep_answers` has named.


def _default_flag_cache() -> str:
  """$XDG_CACHE_HOME (or ~/.cache)/a2i_jax/xla_flags.json; where that cannot be written (or
  there is no home folder), a file in this user's private folder in the temporary folder
  (kept until a reboot, not measured at every start); "" (no answers kept) where that folder
  is not this user's alone."""
  base = files.user_cache_dir()  # "": no home folder (HOME unset).
  path = os.path.join(base, "xla_flags.json") if base else "~/.cache/a2i_jax (HOME is not set)"
  existing = files.nearest_existing(os.path.dirname(path)) if base else ""
  # Not through a symbolic link to nothing (XDG_CACHE_HOME's to a disk not mounted: was
  # measured again at every start; fault hunt).
  if (existing and os.path.isdir(existing) and os.access(existing, os.W_OK | os.X_OK)
      and files._dangling_link(path) is None):  # pylint: disable=protected-access
    return path  # The file is replaced by a rename: its folder must be writable.
  folder = os.path.join(tempfile.gettempdir(), f"a2i_jax-{os.getuid()}")
  try:
    os.makedirs(folder, mode=0o700, exist_ok=True)
    made = os.lstat(folder)
    if stat.S_ISDIR(made.st_mode) and made.st_uid == os.getuid() and made.st_mode & 0o077:
      os.chmod(folder, 0o700)  # This user's own, made open (as an earlier version did).
      made = os.lstat(folder)
  except OSError:
    made = None
  # Only this user's own private folder: another user who made it first could plant answers
  # (a flag marked accepted that XLA refuses aborts the process).
  if (made is None or not stat.S_ISDIR(made.st_mode) or made.st_uid != os.getuid()
      or made.st_mode & 0o077):
    _cannot_keep_answers(folder, f"not this user's private folder; nor can {path}")
    return ""
  return os.path.join(folder, "xla_flags.json")


def accepted_xla_flags(flags: tuple[str, ...], cache_file: Optional[str] = None,
                       timeout_s: float = 120.0) -> tuple[str, ...]:
  """The flags of `flags` that this jaxlib's XLA accepts in XLA_FLAGS.

  XLA aborts the whole process at backend start on a flag it does not know (jaxlib 0.7.2 has
  no YNNPACK flags, 0.10.2 has them), and there is no asking it beforehand. So each flag is
  tried once in a child process (`import jax; jax.devices("cpu")` with that flag alone, about
  a second) and the answer kept per jaxlib version in `cache_file`, a small JSON file. A
  cache that cannot be read or written is ignored (the flags are tried again). Only XLA's
  own "Unknown flag" is remembered as a refusal: a child that fails otherwise, times out or
  cannot start counts as a refusal this time only. Processes that start together on one
  machine probe once (a lock beside the file).

  Args:
    flags: XLA flags, e.g. ("--xla_cpu_use_onednn=true",).
    cache_file: the answers file; None: $XDG_CACHE_HOME (or ~/.cache)/a2i_jax/xla_flags.json;
      "" keeps no answers.
    timeout_s: how long a child may take.
  Returns:
    The accepted flags, in their order in `flags`.
  """
  cache_file = _default_flag_cache() if cache_file is None else cache_file
  version = jaxlib_version()
  with _cache_lock(cache_file):
    known = _cache_section(_read_cache(cache_file), version)
    answers: dict[str, bool] = {}
    for flag in flags:
      if isinstance(known.get(flag), bool):
        continue
      env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
      try:
        # -P: not the working folder's jax.py (was: the child imported it and failed, the
        # flags refused at every start, no word; fault hunt), as the kernel probe's child.
        done = subprocess.run([sys.executable, "-P", "-c", "import jax; jax.devices('cpu')"],
                              env=env, capture_output=True, timeout=timeout_s, check=False,
                              stdin=subprocess.DEVNULL)
      except (OSError, subprocess.TimeoutExpired):  # No child (embedded Python), or too slow.
        continue
      if done.returncode == 0:
        answers[flag] = True
      elif b"Unknown flag" in done.stderr:  # XLA's own refusal; any other failure is not.
        answers[flag] = False
    if answers:
      _merge_into_cache(cache_file, version, answers)
  known.update(answers)
  return tuple(f for f in flags if known.get(f) is True)


@functools.lru_cache(maxsize=None)
def _option_known(name: str, value: Any) -> bool:
  """Whether this XLA accepts the compile option (an unknown one fails the compile)."""
  try:
    jax.jit(lambda x: x + 1).lower(jnp.zeros((), jnp.float32)).compile(
        compiler_options={name: value})
  except Exception:  # pylint: disable=broad-except  # XlaRuntimeError / JaxRuntimeError.
    return False
  return True


def compiler_options(extra: Optional[Mapping[str, Any]] = None,
                     backend: str | None = None) -> dict[str, Any] | None:
  """The compile options the library's programs are compiled with on this backend.

  On CPU: `CPU_COMPILER_OPTIONS` (those this XLA knows) and then `extra`, less any option the
  user sets in XLA_FLAGS, which stays as the user set it, and less the optimisation level and
  LLVM's passes where the user set JAX_DISABLE_MOST_OPTIMIZATIONS. Elsewhere: None, XLA's
  defaults.

  Args:
    extra: more XLA:CPU options for this program (e.g. `models.CHEAP_COMPILE`).
    backend: the JAX backend; default `jax.default_backend()`.
  Returns:
    A dict for `jax.jit(..., compiler_options=)` or `Lowered.compile(compiler_options=)`,
    or None.
  """
  if (backend or jax.default_backend()) != "cpu":
    return None
  user = _xla_flag_names()
  if _most_optimizations_disabled():
    # JAX_DISABLE_MOST_OPTIMIZATIONS sets these itself, and options passed here would win
    # (was: level 1 over the user's 0, without a word; review finding).
    user |= {"xla_backend_optimization_level", "xla_llvm_disable_expensive_passes"}
  options = {name: value for name, value in CPU_COMPILER_OPTIONS.items()
             if name not in user and _option_known(name, value)}
  options.update({name: value for name, value in (extra or {}).items() if name not in user})
  return options or None


def _most_optimizations_disabled() -> bool:
  """Whether the user set JAX_DISABLE_MOST_OPTIMIZATIONS (jax_disable_most_optimizations);
  False where this JAX cannot say (a private flag, present in jax 0.7.2 to 0.10)."""
  try:
    from jax._src import compiler  # pylint: disable=import-outside-toplevel
    return bool(compiler._DISABLE_MOST_OPTIMIZATIONS.value)  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return False


class _JitWithOptions:
  """A jitted function that compiles with compile options when called at the top level, and
  runs as a plain jit inside a caller's own transformation (`jax.jit`, `jax.grad`,
  `jax.make_jaxpr`, ...), where JAX refuses compile options: only the outermost jit may carry
  them. Everything else (`lower`, `trace`, `eval_shape`, ...) is the top-level jit's."""

  def __init__(self, fun: Callable[..., Any], options: dict[str, Any], **kwargs: Any):
    self._top = jax.jit(fun, compiler_options=options, **kwargs)
    self._nested = jax.jit(fun, **kwargs)
    functools.update_wrapper(self, fun)

  def __call__(self, *args: Any, **kwargs: Any) -> Any:
    if any(isinstance(leaf, jax.core.Tracer)
           for leaf in jax.tree_util.tree_leaves((args, kwargs))):
      return self._nested(*args, **kwargs)
    try:
      return self._top(*args, **kwargs)
    except ValueError as e:  # Called inside a trace with concrete arguments (a closure).
      if "top-level" not in str(e):
        raise
      return self._nested(*args, **kwargs)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._top, name)


def jit(fun: Callable[..., Any], extra_options: Optional[Mapping[str, Any]] = None,
        **kwargs: Any) -> Any:
  """`jax.jit(fun, **kwargs)` with the library's `compiler_options()`.

  Called inside another transformation (a caller's own `jax.jit`, `jax.grad`, ...), it runs
  as a plain nested jit: JAX takes compile options only on the outermost one.

  Args:
    fun: the function to compile.
    extra_options: more XLA:CPU options for this program (`compiler_options`' `extra`, e.g.
      `models.CHEAP_COMPILE` for a program that runs once per call).
    **kwargs: `jax.jit`'s other arguments (donate_argnums, static_argnames, ...).
  Returns:
    The jitted function (`jax.jit`'s own where there are no options, e.g. on GPU).
  """
  options = compiler_options(extra_options)
  if not options:
    return jax.jit(fun, **kwargs)
  return _JitWithOptions(fun, options, **kwargs)


# The convolutions' weight gradients: "taps" is `models.conv_grad.taps_conv_general_dilated`.
CONV_WEIGHT_GRADS = ("auto", "xla", "taps")
DECODER_TAILS = ("auto", "full", "phase")
MAX_POOL_FORMS = ("auto", "window", "blocks")
OFFSET_POLYPHASE_FORMS = ("auto", "on", "off")
FOLD_BATCHNORM_FORMS = ("auto", "on", "off")
CONV_OUTPUT_SPLITS = ("auto", "whole", "split")
CONV_INPUT_GRADS = ("auto", "canonical", "xla")
CONV_WEIGHT_GRAD_LAYOUTS = ("auto", "canonical", "xla")


def conv_weight_grad(name: str, backend: str | None = None) -> str:
  """The weight-gradient method for `config.model.conv_weight_grad`.

  "auto" is "taps" on CPU (XLA:CPU's own weight gradient is slow; BENCHMARKS.md, "Weight
  gradients as matrix products") and "xla" elsewhere (GPUs run XLA's weight gradient through
  cuDNN, which has no such slow path). On a CPU whose convolutions run in XLA's own kernels
  (`xla_convolutions`) it is "xla" too: with the "phase" tail that ran the paper train steps
  1.06-1.10x faster than "taps" with the "full" tail, and compiled the disCVAE's in 2-5 s less
  (BENCHMARKS.md, "The convolution kernels chosen on the machine").

  Args:
    name: "auto", "xla" or "taps".
    backend: the JAX backend ("cpu", "gpu", "tpu"); default `jax.default_backend()`.
  Returns:
    "xla" or "taps".
  Raises:
    ConfigError: an unknown name.
  """
  return _resolve("model.conv_weight_grad", "a weight-gradient method", name,
                  CONV_WEIGHT_GRADS, backend, cpu="xla" if xla_convolutions() else "taps",
                  accelerator="xla")


def decoder_tail(name: str, backend: str | None = None) -> str:
  """The form of the decoders' last layer and heads for `config.model.decoder_tail`.

  "auto" is "full" on CPU and "phase" elsewhere: on an H200 the heads' 3-channel convolutions
  and the full-resolution shuffle took a quarter of a train step and half of an inference step,
  which the phase form removes for 1.44x the heads' multiply-adds, which a CPU pays in full
  (`models.decoder_tail`; BENCHMARKS.md, "One NVIDIA H200: a profile"). On a CPU whose
  convolutions run in XLA's own kernels (`xla_convolutions`) it is "phase" too: there the
  merged heads ran at half YNNPACK's speed, and "phase" ran the inference steps 1.03-1.09x
  faster (BENCHMARKS.md, "The convolution kernels chosen on the machine").

  Args:
    name: "auto", "full" or "phase".
    backend: the JAX backend; default `jax.default_backend()`.
  Returns:
    "full" or "phase".
  Raises:
    ConfigError: an unknown name.
  """
  return _resolve("model.decoder_tail", "a decoder tail form", name, DECODER_TAILS, backend,
                  cpu="phase" if xla_convolutions() else "full", accelerator="phase")


def conv_output_split(name: str = "auto", backend: str | None = None) -> str:
  """Whether a convolution with many outputs runs as one or as several over blocks of them.

  "split" computes a convolution with more than `models.conv_grad.SPLIT_OUTPUTS` (512)
  outputs as one convolution per block of at most that many outputs, concatenated: the same
  values and parameters; its input gradient becomes a sum of the blocks' (the same sum in
  another order). "auto" is "split" on CPU and "whole" elsewhere: XLA:CPU ran the input
  gradient of the decoders' polyphase 3x3 layer with 1,024 outputs (256 inputs, 8x8, batch
  32) at 99 GFLOP/s whole and 194 split in two, the forward about a tenth slower; posterior
  inference ran 1.04x faster, training 1.00-1.02x (BENCHMARKS.md, "Wide convolutions in
  blocks of outputs").

  Args:
    name: "auto", "whole" or "split".
    backend: the JAX backend; default `jax.default_backend()`.
  Returns:
    "whole" or "split".
  Raises:
    ConfigError: an unknown name.
  """
  return _resolve("conv_output_split", "a convolution output form", name, CONV_OUTPUT_SPLITS,
                  backend, cpu="split", accelerator="whole")


def conv_input_grad(name: str = "auto", backend: str | None = None) -> str:
  """How a convolution's input gradient is written into the program (NHWC / HWIO, any stride,
  no dilation, one group).

  "xla" is JAX's own rule: a convolution of the output gradient with the kernel flipped in
  space, its input and output channels swapped through the dimension numbers (HLO
  `dim_labels=..._01oi->...`). XLA:CPU runs a convolution in its fast library kernels only
  in the canonical NHWC / HWIO layout, and rewrites the others into it only in a program's
  entry computation, not inside a loop: in a `lax.scan` body the input gradient ran as a
  naive elementwise loop, and a rolled loop of posterior steps 2.4-5.5x slower than the same
  steps unrolled. "canonical" swaps the kernel's channels with an explicit transpose (of
  the small kernel, not the activations) and keeps the convolution canonical, so a rolled
  loop runs as fast as an unrolled one (BENCHMARKS.md, "Convolutions in a loop on CPU").
  "auto" is "canonical" on CPU and "xla" elsewhere (GPU libraries take either layout).

  Args:
    name: "auto", "canonical" or "xla".
    backend: the JAX backend; default `jax.default_backend()`.
  Returns:
    "canonical" or "xla".
  Raises:
    ConfigError: an unknown name.
  """
  return _resolve("conv_input_grad", "a convolution input-gradient form", name,
                  CONV_INPUT_GRADS, backend, cpu="canonical", accelerator="xla")


def conv_weight_grad_layout(name: str = "auto", backend: str | None = None) -> str:
  """How XLA's weight gradient of a convolution (`conv_weight_grad` "xla", and the layers the
  "taps" form leaves to XLA; NHWC / HWIO, any stride, no dilation, one group) is written into
  the program.

  "xla" is JAX's own rule: a convolution of the input with the output gradient as its kernel,
  the batch and feature dimensions of both exchanged through the dimension numbers. As with
  the input gradient (`conv_input_grad`), XLA:CPU rewrites that into its canonical layout only
  in a program's entry computation: in a `lax.scan` of train steps (`steps_per_dispatch` > 1
  with `scan_unroll=False`) every weight gradient ran as a naive loop, and the synthetic
  CVAE's rolled scan 19-23x slower per step than one step per dispatch. "canonical" writes the
  same convolution with explicit transposes (the input to [C, H, W, N], the output gradient
  to [Ho, Wo, N, F], the result back to [kh, kw, C, F]), as XLA's rewrite does outside loops,
  so a rolled scan of train steps runs as fast as single steps (BENCHMARKS.md, "Train steps
  in a rolled loop on CPU"). "auto" is "canonical" on CPU and "xla" elsewhere.

  Args:
    name: "auto", "canonical" or "xla".
    backend: the JAX backend; default `jax.default_backend()`.
  Returns:
    "canonical" or "xla".
  Raises:
    ConfigError: an unknown name.
  """
  return _resolve("conv_weight_grad_layout", "a convolution weight-gradient layout", name,
                  CONV_WEIGHT_GRAD_LAYOUTS, backend, cpu="canonical", accelerator="xla")


def max_pool_form(name: str = "auto", backend: str | None = None) -> str:
  """How `models.max_pool` computes 2x2 max pooling (the same values and gradients either way).

  "auto" is "blocks" (a max over 2x2 blocks with an elementwise gradient) on every backend.
  XLA:GPU computes the reduce-window's ("window") gradient as a scatter, 0.8 ms of the CVAE's
  9 ms train step on an H200. XLA:CPU (jax 0.10) computes it from a variadic reduce-window
  that also carries four int32 index arrays the size of the input, each filled by its own
  iota: on a 2-core AMD EPYC the paper disCVAE's train step ran 1.33x faster with the blocks,
  the CVAE's 1.0-1.2x (BENCHMARKS.md, "An AMD EPYC, and max pooling as blocks on CPU too").

  Args:
    name: "auto", "window" or "blocks".
    backend: the JAX backend; default `jax.default_backend()`.
  Returns:
    "window" or "blocks".
  Raises:
    ConfigError: an unknown name.
  """
  return _resolve("max_pool", "a max-pooling form", name, MAX_POOL_FORMS, backend,
                  cpu="blocks", accelerator="blocks")


def inference_scan_unroll(backend: str | None = None) -> int:
  """Adam steps per iteration of posterior inference's loop (`lax.scan`'s unroll).

  1 (a rolled loop) on CPU, whose program then compiles one step whatever the number of steps
  (the first inference call's compile is issue 15's goal 3); 5 on GPU and TPU, where on an H200
  (bf16, 1,000 images) 5 steps per iteration ran 1.045x (disCVAE) and 1.049x (CVAE) the rolled
  loop's speed, side by side in one process (BENCHMARKS.md, "One NVIDIA H200 at the head").

  Args:
    backend: the JAX backend; default `jax.default_backend()`.
  Returns:
    The steps per iteration (a loop of fewer steps unrolls them all).
  """
  return 1 if (backend or jax.default_backend()) == "cpu" else 5


def fold_batchnorm(name: str = "auto", backend: str | None = None) -> bool:
  """Whether eval mode folds each BatchNorm into the convolution before it
  (`models.conv_bn_relu`: the same function, the BatchNorm's map m * h + t taken into the
  kernel and bias, the ReLU applied to the convolution's own output).

  "auto" is on on every backend. Posterior inference's step (eval mode) ran 1.013x (disCVAE)
  and 1.028x (CVAE) faster with it on an H200 (bf16, 1,000 images), and 1.00-1.05x (disCVAE)
  and 1.06-1.08x (CVAE) on a 2-core Intel Xeon (f32, batch 32), side by side in one process
  (BENCHMARKS.md, "BatchNorm folded into the convolutions in eval mode").

  Args:
    name: "auto", "on" or "off".
    backend: the JAX backend; default `jax.default_backend()`.
  Returns:
    True where eval mode folds.
  Raises:
    ConfigError: an unknown name.
  """
  return _resolve("fold_batchnorm", "a BatchNorm-folding setting", name, FOLD_BATCHNORM_FORMS,
                  backend, cpu="on", accelerator="on") == "on"


def offset_polyphase(name: str = "auto", backend: str | None = None) -> bool:
  """Whether `models.polyphase_form` may compute an upsample + 3x3 layer in the "offset"
  polyphase form (the same function, about half the multiply-adds from 8x8 inputs up).

  "auto" is on on CPU, where it made the paper disCVAE's inference step 1.05-1.09x and its
  train step 1.03-1.04x faster on a 2-core AMD EPYC (BENCHMARKS.md, "3x3 upsampling layers at
  the low resolution"), and off on GPU and TPU until measured there: the layers it serves are
  small (4x4 to 32x32), where an accelerator's time goes to launches more than to FLOPs.

  Args:
    name: "auto", "on" or "off".
    backend: the JAX backend; default `jax.default_backend()`.
  Returns:
    True where the offset form may be taken.
  Raises:
    ConfigError: an unknown name.
  """
  return _resolve("offset_polyphase", "an offset-polyphase setting", name,
                  OFFSET_POLYPHASE_FORMS, backend, cpu="on", accelerator="off") == "on"
