"""Training and posterior-inference throughput, model FLOPs, MFU and compile time; prints JSON.

  python benchmarks/bench.py                                   # CPU default: paper CVAE+disCVAE, batch 32, f32
  python benchmarks/bench.py --models=cvae --batches=32 --dtypes=float32 --repeats=3
  python benchmarks/bench.py --batches=32,256 --dtypes=float32,bfloat16 --out=bench_gpu.json
  python benchmarks/bench.py --smoke                           # tiny model, seconds: checks the script

The models are the paper's (configs/lfw.py: 64x64, full width; `--model_overrides` changes
that). For every (model, batch, dtype) it times:

* train: the library's train step (`train_lib.make_train_step` inside `make_multi_step`, the
  exact function `train.py` runs: batch sampling and augmentation on device, Adam update),
  jitted with the state donated, the dataset (random uint8 images) already on the device.
  Compiled ahead of time (`compile_s`), one warm-up dispatch, then `--repeats` timed dispatches;
  the median is reported.
* infer: posterior inference by optimisation (Adam on the latents through the frozen decoder)
  on `--infer_images` images for `--infer_steps` steps, through `a2i_jax.inference.
  infer_latents` when the library has it, else through a minimal stand-in step written here
  (Gaussian NLL + standard normal prior, the same energy). Reported in image-iterations per
  second; `infer_extrapolated_s_1000x1000` is the time 1,000 images x 1,000 steps would take at
  that rate (measured, not extrapolated, when `--infer_images=1000 --infer_steps=1000`).

Model FLOPs per image are counted from the program's jaxpr (2 x multiply-adds of every
convolution and matrix product, forward and backward: the usual "model FLOPs" of MFU, which
count every kernel tap of every output, the taps on a convolution's padding and on the holes
of a strided layer's input gradient included: `gflop_per_image`, `mfu`). The useful count
leaves those taps out (`gflop_per_image_useful`, `mfu_useful`): for the paper models' train
steps the usual count is 8.0-8.4 % above it. XLA's `compiled.cost_analysis()`, where the
backend reports it (`gflop_per_image_xla`, `mfu_xla_flops`), differs from the usual count on
CPU mostly because it counts only the useful multiply-adds (on GPU it leaves the cuDNN
convolutions out altogether); it adds elementwise work, and it counts a rolled loop's body
once (`xla_steps_counted`: a rolled scan of N fused steps reports one step's FLOPs, so its
figure is divided by one step's images; before 2026-12-06 it was divided by N steps' images,
N times too low). MFU = model FLOPs per second / the device's peak
(`PEAKS` below, documented per device kind; for CPUs the peak is computed from the core
count, clock and vector width read from the OS). The model FLOPs are always those of the
paper's form of the network (`model.upsample_mode="direct"`: upsample, then a 5x5 convolution
at the doubled size); the default "polyphase" form computes the same function with fewer
multiply-adds, and `hfu` (hardware FLOPs utilisation) divides the FLOPs the program actually
executes instead (the usual count of that program).
Compare modes with `--model_overrides=model.upsample_mode=direct`.

Results go to stdout and to `--out` if given. `--results_copy` also writes them as a new
record, `benchmarks/results/<device>_<UTC date>.json` (a CPU named by its model, e.g.
`cpu_amd_epyc_7b13_2026-12-06.json`), and refuses, before measuring, where that file exists:
no run replaces a record BENCHMARKS.md cites (until 2026-12-06 every run without --smoke
overwrote `benchmarks/results/<device>.json`, "cpu.json" on every CPU, whatever its overrides).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402  (benchmarks/timing.py)
from a2i_jax.errors import A2IError  # noqa: E402  (imports no jax)

# The scripts' --smoke model: 32x32 at width 1/16 (config overrides, as `make_config` takes them).
SMOKE_OVERRIDES = {"model.image_size": "32", "model.width": "0.0625"}

HUGE_PAGES_HELP = ("auto: as train.py and infer.py, re-execute with glibc.malloc.hugetlb=1 where "
                   "it helps (a2i_jax/hugepages.py); off: as the process was started.")


def huge_pages(value: str) -> None:
  """`--huge_pages=auto` (`HUGE_PAGES_HELP`): re-executes this script as the entry points
  re-execute themselves, so that its step times are theirs (the huge pages ran the paper train
  step 1.06-1.18x faster in the ninth session). Call it first, before anything starts threads
  or imports jax."""
  if value == "auto":
    from a2i_jax import hugepages  # pylint: disable=import-outside-toplevel
    hugepages.reexec_with_huge_pages()


XLA_CPU_FLAGS_HELP = ("'recommended': the XLA flags train.py and infer.py add on this CPU "
                      "(a2i_jax.perf.recommended_cpu_flags(), measured once per CPU model); "
                      "'none': XLA_FLAGS as it is; or flags to add.")


def set_xla_cpu_flags(value: str) -> str:
  """Adds to XLA_FLAGS what `--xla_cpu_flags` names (`XLA_CPU_FLAGS_HELP`), before JAX starts
  its backend; the scripts' processes (and the children they start) then compile as the entry
  points do on this CPU. Returns the resulting XLA_FLAGS."""
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel  # Imports jax: no backend.
  if value == "recommended":
    perf.set_recommended_xla_flags()
  elif value != "none":
    # XLA would abort at backend start on a flag it does not know, with its own fatal line.
    flags = tuple(value.split())
    unknown = [f for f in flags if f not in perf.accepted_xla_flags(flags)]
    if unknown:
      raise SystemExit(f"error: --xla_cpu_flags: this jaxlib's XLA does not know "
                       f"{' '.join(unknown)}; drop it, or check its spelling.")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + value).strip()
  return os.environ.get("XLA_FLAGS", "")


def library_errors_as_lines(main: Callable[..., Any]) -> Callable[..., Any]:
  """A script's `main` whose library refusals of a value (an `A2IError`: a config file not
  found, an override the model refuses) are one `error:` line (`SystemExit`, exit status 1)
  instead of a traceback.

  Args:
    main: the script's main function.
  Returns:
    The wrapped function.
  """
  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except A2IError as e:
      raise SystemExit(f"error: {' '.join(str(e).split())}") from None
  return wrapped


def parse_absl_flags(argv: list, script: str, config_flag: Any = None,
                     default_config: str = "configs/synthetic.py") -> list:
  """absl's parse of an absl script's command line (train_step.py, scan_vs_loop.py), its
  refusals one `error:` line and exit status 2 (`timing.refuse`) instead of absl's two-line
  FATAL or a traceback, before anything is compiled: a value absl refuses (a count below its
  `lower_bound`, a number that is not one), and, given `config_flag`, a config file that does
  not load, an override of a key it does not have, or a config the library refuses
  (`config_lib.check_variant`, `config_lib.validate_config`). The config flag's refusals are
  train.py's lines (`config_lib.explain_config_flag_error`), under the script's flag name.

  The config flag is to be defined with no default (`DEFINE_config_file(name, None, ...)`):
  ml_collections loads a default config as the flag is defined, at import, where an unknown
  override key was a traceback before any parse. `default_config` is put first on the command
  line instead when it names no config (in `sys.argv` too, where ml_collections reads the
  overrides' order).

  Args:
    argv: the command line, the program first.
    script: the script's path, e.g. "benchmarks/train_step.py", for the help hint.
    config_flag: the script's `config_flags.DEFINE_config_file` holder, or None.
    default_config: the config spec when the command line gives none.
  Returns:
    The arguments absl leaves over.
  Raises:
    SystemExit: (status 2) a flag that cannot be parsed, or a config that cannot be used.
  """
  from absl import flags as absl_flags  # pylint: disable=import-outside-toplevel
  argv = list(argv)
  name = f"--{config_flag.name}" if config_flag is not None else None
  if name and not any(a == name or a.startswith(name + "=") for a in argv[1:]):
    argv.insert(1, f"{name}={default_config}")
    if sys.argv[1:] == argv[2:]:
      sys.argv[:] = argv
  if config_flag is None:
    try:
      return absl_flags.FLAGS(argv)
    except absl_flags.Error as e:
      timing.refuse(f"{str(e).rstrip('.')}; see python {script} --helpfull.")
  from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
  try:
    rest = absl_flags.FLAGS(argv)
    config = config_flag.value  # A load that failed: an error, or an _ErrorConfig.
    import ml_collections  # pylint: disable=import-outside-toplevel
    if not isinstance(config, ml_collections.ConfigDict):
      raise TypeError(f"the config is a {type(config).__name__}")
  except Exception as e:  # pylint: disable=broad-except  (absl's, the file's load, an override)
    # train.py's words: the did-you-mean key, what an override's value must be, the line of
    # the config file's own error (was a shorter copy of them here, without those).
    timing.refuse(config_lib.explain_config_flag_error(argv, e, name, script))
  spec = config_lib.config_flag_value(argv, name)
  try:
    config_lib.check_variant(config, spec)
    config_lib.validate_config(config)
  except A2IError as e:
    timing.refuse(f"{name}={spec}: {e}")
  return rest


# Peak dense FLOP/s per device kind (matched against `device.device_kind`, lower case, first
# match wins): {compute dtype: FLOP/s}. Vendor data sheets, dense (no sparsity) figures.
# float32 on NVIDIA runs convolutions and matmuls on tensor cores as TF32 under JAX's default
# precision, so its peak is the TF32 tensor-core one.
PEAKS = {
    # The NVL parts first: "h200" / "h100" alone would give them the SXM peak (a review).
    "h200 nvl": {"bfloat16": 835.5e12, "float32": 417.5e12},  # Half the sparsity figures.
    "h100 nvl": {"bfloat16": 835.5e12, "float32": 417.5e12},
    "h200": {"bfloat16": 989.4e12, "float32": 494.7e12},  # H200 SXM: as H100 SXM.
    "h100 pcie": {"bfloat16": 756.5e12, "float32": 378.0e12},
    "h100": {"bfloat16": 989.4e12, "float32": 494.7e12},  # H100 SXM5 data sheet.
    "a100": {"bfloat16": 312e12, "float32": 156e12},
    "tpu v6 lite": {"bfloat16": 918e12, "float32": 918e12},  # v6e: f32 matmuls run as bf16 passes.
    "tpu v5 lite": {"bfloat16": 197e12, "float32": 197e12},  # v5e.
    "tpu v5p": {"bfloat16": 459e12, "float32": 459e12},
    "tpu v4": {"bfloat16": 275e12, "float32": 275e12},
}


def physical_cores(cpuinfo: str, cpus: set[int]) -> Optional[int]:
  """Physical cores among the logical CPUs `cpus`: the distinct (`physical id`, `core id`)
  pairs of their /proc/cpuinfo blocks (`cpuinfo`, the file's text), so that two hyperthreads of
  one core, which share its FMA units, count once. None where a block lacks either field (some
  VMs and non-x86 kernels), for the caller to fall back on the logical count."""
  pairs = set()
  for block in cpuinfo.split("\n\n"):
    fields = dict((k.strip(), v.strip()) for k, _, v in
                  (line.partition(":") for line in block.splitlines()) if k.strip())
    if "processor" not in fields or not fields["processor"].isdigit():
      continue
    if int(fields["processor"]) not in cpus:
      continue
    if "physical id" not in fields or "core id" not in fields:
      return None
    pairs.add((fields["physical id"], fields["core id"]))
  return len(pairs) or None


def cpu_peak() -> dict[str, Any]:
  """This CPU's fp32 peak from the OS: cores x clock x FLOP per cycle.

  FLOP per cycle per core: 2 FMA units x (8 lanes AVX2 | 16 lanes AVX-512) x 2 (multiply and
  add). Two figures are given: AVX2-FMA (the issue's yardstick) and the widest vector unit the
  CPU reports, which MFU uses (`device_peak`). AMD's family 19h with AVX-512 (Zen 4) runs an
  AVX-512 instruction as two 256-bit halves, so its widest figure is the AVX2 one (Zen 5's
  mobile parts, family 1Ah, do too and are not told apart here).

  The clock is the first `cpu MHz` line of /proc/cpuinfo: the first CPU's clock as the kernel
  reports it at that moment, not a nominal figure: where the clock scales it may read low when
  idle or high under turbo, and MFU is off by the same factor (2 GHz where the line is
  missing). The cores
  are the physical ones among the CPUs this process may run on (`physical_cores`; since
  2026-12-05: before, logical CPUs, so a machine exposing hyperthreads counted each as a core
  and its MFU read half its true share); `logical_cpus` is the count of those CPUs.
  """
  cpus = (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity")
          else set(range(os.cpu_count() or 1)))
  cores = len(cpus)
  mhz, flags, text = None, "", ""
  try:
    with open("/proc/cpuinfo") as f:
      text = f.read()
    cores = physical_cores(text, cpus) or cores
    m = re.search(r"cpu MHz\s*:\s*([\d.]+)", text)
    mhz = float(m.group(1)) if m else None
    m = re.search(r"^flags\s*:(.*)$", text, re.M)
    flags = m.group(1) if m else ""
  except OSError:
    pass
  ghz = (mhz or 2000.0) / 1000.0
  avx2 = cores * ghz * 1e9 * 2 * 8 * 2
  family = re.search(r"^cpu family\s*:\s*(\d+)", text, re.M)
  halves = "AuthenticAMD" in text and family is not None and int(family.group(1)) == 0x19
  full_avx512 = " avx512f" in flags and not halves
  return {"cores": cores, "logical_cpus": len(cpus), "ghz": ghz, "avx512": " avx512f" in flags,
          "avx512_full_width": full_avx512, "peak_f32_avx2_fma": avx2,
          "peak_f32_widest": avx2 * 2 if full_avx512 else avx2}


def device_peak(device: Any, dtype: str) -> tuple[Optional[float], str]:
  """(peak FLOP/s, where it comes from) for `device` computing in `dtype`."""
  if device.platform == "cpu":
    p = cpu_peak()
    # bf16 on CPU has no faster FMA path in XLA:CPU (it is converted to f32): same peak. The
    # widest vector unit: XLA:CPU's YNNPACK kernels use AVX-512 where the CPU has it (measured
    # on an Intel Xeon: above the AVX2 peak), so the AVX2 figure would overstate the
    # utilisation there; where AVX-512 runs as 256-bit halves (AMD Zen 4) the peak is AVX2's.
    # Under `compare_cpu.sh ISA=avx2` (oneDNN, and with it XLA's own convolutions, held to
    # AVX2 or lower) the kernels cannot use the wider unit: the peak is AVX2's.
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    capped = bool(isa) and not isa.startswith(("AVX512", "AVX10", "ALL", "DEFAULT"))
    wide = p["avx512_full_width"] and not capped
    lanes = 16 if wide else 8
    unit = ("AVX-512" if wide else
            f"AVX2 (ONEDNN_MAX_CPU_ISA={isa})" if capped else
            "AVX-512 as 256-bit halves" if p["avx512"] else "AVX2")
    return (p["peak_f32_widest"] if wide else p["peak_f32_avx2_fma"]), (
        f"CPU {unit} FMA: {p['cores']} cores x {p['ghz']:.2f} GHz x {4 * lanes} FLOP/cycle")
  kind = device.device_kind.lower()
  for name, peaks in PEAKS.items():
    if name in kind:
      return peaks.get(dtype), f"data sheet ({name}, {dtype})"
  return None, f"unknown device kind {device.device_kind!r}"


# ----------------------------------------------------------------------------------------------
# FLOP counting from the jaxpr.

def _shape_prod(shape) -> int:
  return int(math.prod(int(d) for d in shape))


def _taps_on_input(size: int, dilation: int, pad_low: int, taps: int, tap_dilation: int,
                   stride: int, outputs: int) -> int:
  """(output, kernel tap) pairs along one spatial axis of a convolution whose tap lands on a
  real input element: not on padding, nor on a hole of the input's dilation (`dilation` > 1,
  as in the input gradient of a strided convolution)."""
  count = 0
  last = (size - 1) * dilation
  for i in range(outputs):
    for j in range(taps):
      p = i * stride + j * tap_dilation - pad_low
      if 0 <= p <= last and p % dilation == 0:
        count += 1
  return count


def _conv_macs(eqn: Any, useful: bool) -> int:
  """Multiply-adds of one conv_general_dilated equation: every output x every kernel tap x
  input features (the usual count, padding taps included), or, `useful`, only the taps that
  land on real input (`_taps_on_input`)."""
  params = eqn.params
  spec = params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  rhs = eqn.invars[1].aval.shape
  out = eqn.outvars[0].aval.shape
  cin = int(rhs[spec.rhs_spec[1]])  # (out feat, in feat, spatial...): per group.
  if not useful:
    return _shape_prod(out) * cin * _shape_prod([rhs[d] for d in spec.rhs_spec[2:]])
  spatial = len(spec.lhs_spec) - 2
  lhs_dil = params.get("lhs_dilation") or (1,) * spatial
  rhs_dil = params.get("rhs_dilation") or (1,) * spatial
  pairs = 1
  for d in range(spatial):
    pairs *= _taps_on_input(int(lhs[spec.lhs_spec[2 + d]]), int(lhs_dil[d]),
                            int(params["padding"][d][0]), int(rhs[spec.rhs_spec[2 + d]]),
                            int(rhs_dil[d]), int(params["window_strides"][d]),
                            int(out[spec.out_spec[2 + d]]))
  return int(out[spec.out_spec[0]]) * int(out[spec.out_spec[1]]) * cin * pairs


def jaxpr_flops(jaxpr: Any, useful: bool = False) -> float:
  """2 x multiply-adds of every conv_general_dilated and dot_general in a (closed) jaxpr.

  The usual count of model FLOPs: a convolution counts every kernel tap of every output, those
  on its padding included (`useful=False`; 8.0-8.4 % more than the useful count for the paper
  models' train steps, whose 5x5 layers are padded by 2 at sizes down to 8x8). `useful=True`
  leaves out the taps that land on padding or on the holes of an input's dilation: the
  multiply-adds on real input, as XLA's own cost analysis counts them.

  Recurses into sub-jaxprs (jit, custom_jvp/vjp, remat); scan bodies count `length` times.

  Args:
    jaxpr: a jaxpr or closed jaxpr (`jax.make_jaxpr`'s).
    useful: count only the multiply-adds on real input (see above).
  Returns:
    The FLOPs.
  """
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      total += 2.0 * _conv_macs(eqn, useful)
    elif name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * _shape_prod(eqn.outvars[0].aval.shape) * _shape_prod(
          [lhs[d] for d in lhs_contract])
    times = int(eqn.params.get("length", 1)) if name == "scan" else 1
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (tuple, list)) else (v,)):
        if hasattr(sub, "eqns") or (hasattr(sub, "jaxpr") and hasattr(sub, "consts")):
          total += times * jaxpr_flops(sub, useful)
  return total


def xla_steps_counted(steps: int, unroll: Any) -> Optional[int]:
  """How many of a dispatch's `steps` train steps XLA's cost analysis counts, for
  `train_lib.make_multi_step`'s `lax.scan` with `unroll` (`config.scan_unroll`).

  XLA counts a rolled loop's body once, not once per trip: a rolled scan of 4 steps reports
  one step's FLOPs (before 2026-12-06 the scripts divided that by 4 as well). One step (no
  loop) and a fully unrolled scan report every step; a scan unrolled by k dividing `steps`
  reports k (its body).

  Args:
    steps: steps per dispatch.
    unroll: the scan's unroll: False / 0 / 1 (rolled), True or an int of at least `steps`
      (fully unrolled), or an int in between (partly unrolled).
  Returns:
    The steps counted, or None for a scan unrolled by k not dividing `steps`, whose figure
    mixes a body of k steps counted once with remainder steps outside it.
  """
  if steps == 1 or unroll is True or (not isinstance(unroll, bool) and unroll >= steps):
    return steps
  if unroll is False or unroll in (0, 1):
    return 1
  return int(unroll) if steps % int(unroll) == 0 else None


def xla_flops(compiled: Any) -> Optional[float]:
  """FLOPs of a compiled program from XLA's cost analysis, or None if the backend has none."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (some backends raise instead of None)
    return None
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  if not cost or "flops" not in cost or cost["flops"] <= 0:
    return None
  return float(cost["flops"])


# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
  model: str
  batch: int
  dtype: str


def _time_calls(fn: Callable[[], Any], repeats: int) -> list[float]:
  """`timing.timed_calls` of `fn`, waited for (turn-taking included)."""
  import jax  # pylint: disable=import-outside-toplevel
  return timing.timed_calls(lambda: jax.block_until_ready(fn()), repeats)


def load_config(spec: str, model: str) -> Any:
  """The config of `model` from the config file `spec`, as the argparse scripts' --config
  names it ("lfw", "configs/synthetic.py": no ":<variant>", the script passes the model): the
  file loaded as `spec:<model>` where its get_config takes an argument, else as it is. Its
  refusals are train.py's words (`config_lib`) in one `error:` line, exit status 2.

  Args:
    spec: the config file (a path, or a bare name looked up in configs/).
    model: the model measured, e.g. "cvae".
  Returns:
    The config; its model.name is `model`.
  Raises:
    SystemExit: (status 2, `timing.refuse`) a file that is missing or does not load (its own
      error with its line: was a traceback), a ":<variant>" in `spec`, or a config of another
      model than `model`.
  """
  import inspect  # pylint: disable=import-outside-toplevel
  from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
  loaded = spec
  try:
    path, _, arg = config_lib.resolve_spec(spec).partition(":")
    if arg:  # Was: loaded as "<file>:<arg>:<model>", "has no variant ':cvae:cvae'".
      timing.refuse(f"--config={spec}: the script loads the file once per model of --models "
                    f"(as {path}:{model}); drop ':{arg}' and name the models with --models.")
    # A file whose get_config takes no argument, loaded as it is (was: told to "drop ':cvae'
    # from --config", a suffix the script had added).
    get = getattr(config_lib.load_config_module(path), "get_config", None)
    takes = callable(get) and bool(inspect.signature(get).parameters)
    loaded = f"{path}:{model}" if takes else path
    config = config_lib.get_config(loaded)
  except A2IError as e:
    timing.refuse(str(e))
  except Exception as e:  # pylint: disable=broad-except  (the file's own error)
    # Was a traceback: train.py's line, the error's first line and where in the file.
    script = os.path.basename(sys.argv[0])
    timing.refuse(config_lib.explain_config_flag_error([script, f"--config={loaded}"], e,
                                                       "--config", script))
  name = config_lib.value_at(config, "model.name")
  if name != model:  # Was: measured, and reported under the name asked for.
    if takes:
      timing.refuse(f"the config file {path} gives model.name={name!r} for {path}:{model}; "
                    "make its get_config set model.name to its argument, as configs/lfw.py's "
                    "does.")
    timing.refuse(f"the config file {path} takes no argument and gives model.name={name!r}, "
                  f"not {model!r}; pass --models={name}, or give its get_config the model's "
                  "name as its argument, as configs/lfw.py's has.")
  return config


def _override(config: Any, key: str, value: str) -> None:
  """Sets `key` (a dotted path) of `config` to `value` parsed as its type, with absl's parsers,
  as ml_collections' for train.py's --config.<key>, so that a value means the same in both
  (was: any bool value but "1" or "true", e.g. "flase", taken as False without a word);
  refuses (one line, exit status 2, train.py's words from `config_lib`) a key the config lacks
  (with the closest one) or a value of another type (was: an exit status 1 line naming
  configs/lfw.py whatever the config, and "a value of its type" without the type)."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from a2i_jax import config_lib  # pylint: disable=import-outside-toplevel
  keys = sorted(config_lib.leaf_paths(config))
  if key not in keys:
    under = [k for k in keys if k.startswith(key + ".")]
    if under:  # A section.
      timing.refuse(f"the override {key}={value}: {key} is a section of the config; override "
                    f"one of its keys (e.g. {under[0]}=...).")
    timing.refuse(f"the override {key}={value}: "
                  f"{config_lib.unknown_key_words(key, keys, prefix='')}")
  old = config_lib.value_at(config, key)
  kind = type(old)
  parser = {bool: flags.BooleanParser(), int: flags.IntegerParser(),
            float: flags.FloatParser()}.get(kind, flags.ArgumentParser())
  try:
    new = parser.parse(value)
  except ValueError:
    words = config_lib.override_kind_words(key, value, old, prefix="")
    timing.refuse(f"the override {key}={value}: "
                  f"{words or f'config.{key} takes no value of {value!r}.'}")
  parent, _, leaf = key.rpartition(".")
  (config_lib.value_at(config, parent) if parent else config)[leaf] = new


def make_config(case: Case, overrides: dict, base: str = "lfw") -> Any:
  """`base` (configs/lfw.py, the paper models, or another config file: `load_config`) for one
  case, with `overrides` ({dotted key: value as typed}).

  Args:
    case: the model, batch size and compute dtype.
    overrides: the command line's key=value changes.
    base: the config file.
  Returns:
    The config.
  Raises:
    SystemExit: (status 2, one `error:` line) a config file that cannot be used
      (`load_config`), an override of a key the config lacks or with a value of another type.
  """
  config = load_config(base, case.model)
  config.batch_size = case.batch
  config.model.dtype = case.dtype
  config.steps_per_dispatch = 1
  for key, value in overrides.items():
    _override(config, key, value)
  config.data.image_size = config.model.image_size
  return config


def _forms(config: Any) -> dict:
  """The resolved layer forms a timed program ran with."""
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  from a2i_jax.models import conv_grad, layers  # pylint: disable=import-outside-toplevel
  return {"decoder_tail": perf.decoder_tail(config.model.get("decoder_tail", "auto")),
          "max_pool": perf.max_pool_form(layers.MAX_POOL_FORM or "auto"),
          "conv_output_split": perf.conv_output_split(conv_grad.CONV_OUTPUT_SPLIT or "auto"),
          "offset_polyphase": perf.offset_polyphase(layers.POLYPHASE_OFFSET or "auto")}


def direct_config(config: Any) -> Any:
  """A copy of `config` whose model computes upsample + conv and the decoders' last layer as
  written (model.upsample_mode "direct", model.decoder_tail "full"), with XLA's own weight
  gradients (model.conv_weight_grad "xla", the form GPUs run; CPU's "taps" form writes them
  over the padded input, which the useful count would count): the form whose FLOPs are the
  model FLOPs of MFU, one count per model on every backend. (Its heads are one convolution, the
  background's padded from 3 to 4 outputs: about 0.1 % more FLOPs for the disCVAE, counted.)"""
  direct = config.copy_and_resolve_references()
  direct.model.upsample_mode = "direct"
  direct.model.decoder_tail = "full"
  direct.model.conv_weight_grad = "xla"
  return direct


def train_program(config: Any, num_images: int) -> tuple[Any, Any, dict, Any]:
  """The library's train step as `train.py` runs it, on one device, unjitted: (steps, state,
  data, mesh), where `steps(state, data, key)` is `train_lib.make_multi_step` of
  `make_train_step`, `state` a fresh train state and `data` `num_images` random images, both
  placed on the one-device mesh. Callers jit it (`perf.jit` for the library's compile options,
  `jax.jit` to name XLA's options themselves)."""
  import jax  # pylint: disable=import-outside-toplevel
  from a2i_jax import models, parallel, train_lib  # pylint: disable=import-outside-toplevel
  mesh = parallel.make_mesh(jax.devices()[:1])
  model = models.create_model(config.model)
  tx = train_lib.make_optimizer(config)
  state = parallel.put_replicated(
      train_lib.create_train_state(model, config, tx, jax.random.key(0)), mesh)
  data = parallel.put_replicated(random_data(config, num_images), mesh)
  steps = train_lib.make_multi_step(train_lib.make_train_step(model, tx, config), config, mesh)
  return steps, state, data, mesh


def random_data(config: Any, n: int) -> dict:
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  s = config.model.image_size
  data = {"images": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
          "attributes": rng.normal(size=(n, config.model.y_dim)).astype(np.float32)}
  if config.model.name == "discvae":
    data["masks"] = rng.integers(0, 256, (n, s, s), dtype=np.uint8)
  return data


def bench_train(case: Case, config: Any, repeats: int, peak: Optional[float],
                compile_only: bool = False, pipelined: int = 0) -> dict:
  """Times one train step (the library's) per dispatch on one device.

  With `compile_only`, only tracing / lowering and compiling are timed (time to first step).
  With `pipelined` = N > 0, also N dispatches issued back to back and waited for once, three
  times (`*_pipelined`): the device never waits for the host between steps, as in `train.py`'s
  loop with `config.dispatch_ahead`, where the next step is dispatched before the last one's
  metrics are read. The blocked figures include each dispatch's latency.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from a2i_jax import models, perf, train_lib, train_state  # pylint: disable=import-outside-toplevel

  steps, state, data, mesh = train_program(config, max(512, 2 * case.batch))
  tx = train_state.make_optimizer(config)
  fn = perf.jit(steps, donate_argnums=(0,))  # The library's compile options.
  key = jax.random.key(1)
  t0 = time.perf_counter()
  lowered = fn.lower(state, data, key)
  lower_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  if compile_only:
    return {"lower_s": round(lower_s, 2), "compile_s": round(compile_s, 2)}
  # Model FLOPs count the paper's form of every layer (upsample, then convolve: the "direct"
  # mode), whatever form runs; the executed FLOPs are those of the program that ran.
  per_dispatch = case.batch * config.steps_per_dispatch  # Images per timed call.
  program = jax.make_jaxpr(steps)(state, data, key)
  flops_exec = jaxpr_flops(program) / per_dispatch
  if config.model.get("upsample_mode", "polyphase") != "direct":
    direct = direct_config(config)
    d_model = models.create_model(direct.model)
    d_steps = train_lib.make_multi_step(train_lib.make_train_step(d_model, tx, direct), direct,
                                        mesh)
    program = jax.make_jaxpr(d_steps)(state, data, key)
  flops_jaxpr = jaxpr_flops(program) / per_dispatch
  # The same multiply-adds less those on padding taps (`jaxpr_flops`): 7.4-7.8 % fewer.
  flops_useful = jaxpr_flops(program, useful=True) / per_dispatch
  # XLA counts a rolled loop's body once (`xla_steps_counted`): per image of the steps counted.
  counted = xla_steps_counted(config.steps_per_dispatch, config.get("scan_unroll", False))
  flops_xla = xla_flops(compiled)
  if flops_xla is not None:
    flops_xla = None if counted is None else flops_xla / (case.batch * counted)
  holder = [state]

  def step():
    holder[0], metrics = compiled(holder[0], data, key)
    return metrics

  # Warm-up, waited for: the dispatch is asynchronous, and before 2026-11-30 (eighth session)
  # the first timed call also waited for the warm-up's step, about twice a step's time.
  jax.block_until_ready(step())
  times = _time_calls(step, repeats)
  step_s = statistics.median(times)
  ips = per_dispatch / step_s
  piped = {}
  if pipelined > 0:
    def many():
      for _ in range(pipelined - 1):
        step()
      return step()
    runs = [t / pipelined for t in _time_calls(many, 3)]
    ips_piped = per_dispatch / statistics.median(runs)
    piped = {"dispatches_pipelined": pipelined,
             "step_s_pipelined_all": [round(t / config.steps_per_dispatch, 6) for t in runs],
             "images_per_s_pipelined": round(ips_piped, 2),
             "mfu_pipelined": None if not peak else round(flops_jaxpr * ips_piped / peak, 4),
             "mfu_useful_pipelined": (None if not peak
                                      else round(flops_useful * ips_piped / peak, 4)),
             "hfu_pipelined": None if not peak else round(flops_exec * ips_piped / peak, 4)}
  return {"lower_s": round(lower_s, 2), "compile_s": round(compile_s, 2),
          "steps_per_dispatch": config.steps_per_dispatch,
          # Microseconds: 0.1 ms, the rounding before 2026-12-05, is 1-1.5 % of an H200 step.
          "step_s_median": round(step_s / config.steps_per_dispatch, 6),
          "step_s_all": [round(t / config.steps_per_dispatch, 6) for t in times],
          "images_per_s": round(ips, 2),
          "upsample_mode": config.model.get("upsample_mode", "polyphase"),
          **_forms(config),
          "gflop_per_image": round(flops_jaxpr / 1e9, 3),
          "gflop_per_image_useful": round(flops_useful / 1e9, 3),
          "gflop_per_image_executed": round(flops_exec / 1e9, 3),
          "gflop_per_image_xla": None if flops_xla is None else round(flops_xla / 1e9, 3),
          # Why it is null: a scan unrolled by k not dividing the steps (`xla_steps_counted`).
          "xla_steps_counted": counted,
          "model_tflop_per_s": round(flops_jaxpr * ips / 1e12, 4),
          "mfu": None if not peak else round(flops_jaxpr * ips / peak, 4),
          "mfu_useful": None if not peak else round(flops_useful * ips / peak, 4),
          "hfu": None if not peak else round(flops_exec * ips / peak, 4),
          "mfu_xla_flops": None if not (peak and flops_xla) else round(flops_xla * ips / peak, 4),
          **piped}


def _standin_inference(model: Any, variables: dict, config: Any, steps: int,
                       learning_rate: float) -> Callable:
  """Adam on the latents through the frozen decoder (eval-mode BatchNorm), `steps` steps.

  Energy per image: Gaussian NLL of the image under the decoder (CVAE: its own variance;
  disCVAE: unit variance on the composite) + 0.5 |z|^2. Returns a jitted `run(x, y, key)`.
  `bench_infer` counts the FLOPs of its one-step program; it times the library's own loop.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from a2i_jax import objectives, perf  # pylint: disable=import-outside-toplevel

  mc = config.model
  tx = optax.adam(learning_rate)

  def energy(z, x, y):
    if mc.name == "discvae":
      out = model.apply(variables, z["fg"], z["bg"], y, method="decode")
      nll = objectives.gaussian_nll(x, out["mean"], jnp.zeros_like(out["mean"]))
    else:
      out = model.apply(variables, z["z"], y, method="decode")
      nll = objectives.gaussian_nll(x, out["mean"], out["logvar"])
    prior = sum(0.5 * jnp.sum(jnp.square(v), axis=-1) for v in z.values())
    return jnp.sum(nll + prior)

  def one(carry, x, y):
    z, opt = carry
    e, g = jax.value_and_grad(energy)(z, x, y)
    updates, opt = tx.update(g, opt, z)
    return (optax.apply_updates(z, updates), opt), e

  def run(x, y, key):
    n = x.shape[0]
    if mc.name == "discvae":
      k1, k2 = jax.random.split(key)
      z = {"fg": jax.random.normal(k1, (n, mc.zf_dim)), "bg": jax.random.normal(k2, (n, mc.zb_dim))}
    else:
      z = {"z": jax.random.normal(key, (n, mc.z_dim))}
    carry = (z, tx.init(z))
    if jax.default_backend() == "cpu":
      # A Python loop, unrolled (`bench_infer` builds it for one step and counts the FLOPs of
      # that step's program, without a while loop; the library's CPU form before 2026-12-03).
      energies = []
      for _ in range(steps):
        carry, e = one(carry, x, y)
        energies.append(e)
      return carry[0], jnp.stack(energies)
    carry, energies = jax.lax.scan(lambda c, _: one(c, x, y), carry, None, length=steps)
    return carry[0], energies

  return perf.jit(run)


@dataclasses.dataclass
class InferenceCall:
  """Posterior inference on random images, set up as the library's callers set it up: the
  model with fresh variables, images `x` in [-1, 1] with attributes `y`, the options, the
  programs `fns` (built once, as `run_inference` builds them, so repeated calls do not
  retrace; a dict, so a caller may wrap an entry to time or record it), the trained model and
  a one-device mesh. Calling it runs `inference.infer_latents` and waits for its output."""
  model: Any
  variables: Any
  x: Any
  y: Any
  key: Any
  options: Any
  fns: dict
  trained: Any
  mesh: Any

  def __call__(self) -> dict:
    import jax  # pylint: disable=import-outside-toplevel
    from a2i_jax import inference  # pylint: disable=import-outside-toplevel
    return jax.block_until_ready(inference.infer_latents(
        self.trained, self.x, self.y, None, key=self.key, options=self.options,
        mesh=self.mesh, fns=self.fns))


def inference_call(config: Any, n_images: int, variables: Any = None,
                   **options: Any) -> InferenceCall:
  """An `InferenceCall` on `n_images` of `random_data`, one restart unless `options` (fields
  of `inference.InferenceOptions`, over the config's) say otherwise; `variables`: the model's,
  e.g. after a train step (default: freshly initialised)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from a2i_jax import inference, models, parallel  # pylint: disable=import-outside-toplevel
  model = models.create_model(config.model)
  if variables is None:
    variables = models.init_variables(model, config.model, jax.random.key(0))
  variables = jax.device_put(variables)
  data = random_data(config, n_images)
  options.setdefault("restarts", 1)
  opts = inference.InferenceOptions.from_config(config.inference, **options)
  return InferenceCall(
      model=model, variables=variables,
      x=jnp.asarray(data["images"], jnp.float32) / 127.5 - 1.0,
      y=jnp.asarray(data["attributes"]), key=jax.random.key(2), options=opts,
      fns=dict(inference.make_inference_fns(model, opts)),
      trained=inference.TrainedModel.from_variables(config, variables, model=model),
      mesh=parallel.make_mesh(jax.devices()[:1]))


# How inference's three programs compile (`set_compile_way`): the library's way, waiting for all
# three before the first runs (the eighteenth session's), or each when the call reaches it.
COMPILE_WAYS = ("default", "wait_all", "in_turn")


def set_compile_way(fns: dict, way: str) -> None:
  """Makes an `InferenceCall`'s `fns` compile its programs `way` (one of `COMPILE_WAYS`):
  "default" leaves `compile_ahead` as the library builds it, "wait_all" waits for all three
  of its compiles before returning, "in_turn" drops it."""
  ahead = fns.pop("compile_ahead")
  if way == "in_turn":
    return

  def compile_ahead(*inputs):
    handle = ahead(*inputs)
    if way == "wait_all":
      handle.wait_all()
    return handle
  fns["compile_ahead"] = compile_ahead


def bench_infer(case: Case, config: Any, n_images: int, steps: int, repeats: int,
                peak: Optional[float]) -> dict:
  """Times posterior inference on `n_images` images for `steps` steps (one call)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from a2i_jax import models  # pylint: disable=import-outside-toplevel

  infer = inference_call(config, n_images, steps=steps)
  model, variables, x, y, key = infer.model, infer.variables, infer.x, infer.y, infer.key

  def call():
    return infer()["energy_trace"]

  t0 = time.perf_counter()
  energies = jax.device_get(call())
  first_s = time.perf_counter() - t0
  times = _time_calls(call, repeats)
  run_s = statistics.median(times)
  rate = n_images * steps / run_s
  # FLOPs of one iteration: the stand-in's one-step program (decoder forward + backward to
  # the latents, as in the library's loop; the library's encoder init is not counted).
  one = _standin_inference(model, variables, config, 1, 0.01)
  flops_exec = jaxpr_flops(jax.make_jaxpr(one)(x, y, key)) / n_images
  direct = direct_config(config)  # Model FLOPs: the paper's form of the layers (see train).
  one = _standin_inference(models.create_model(direct.model), variables, direct, 1, 0.01)
  program = jax.make_jaxpr(one)(x, y, key)
  flops = jaxpr_flops(program) / n_images
  flops_useful = jaxpr_flops(program, useful=True) / n_images  # Padding taps left out.
  energies = jnp.asarray(energies).reshape(-1)
  return {"path": "a2i_jax.inference.infer_latents", "images": n_images, "steps": steps,
          "first_call_s": round(first_s, 2),
          "compile_s_estimate": round(max(first_s - run_s, 0.0), 2),
          "run_s_median": round(run_s, 4), "run_s_all": [round(t, 4) for t in times],
          "image_iterations_per_s": round(rate, 2),
          "infer_extrapolated_s_1000x1000": round(1e6 / rate, 2),
          "upsample_mode": config.model.get("upsample_mode", "polyphase"),
          **_forms(config),
          "gflop_per_image_iteration": round(flops / 1e9, 3),
          "gflop_per_image_iteration_useful": round(flops_useful / 1e9, 3),
          "gflop_per_image_iteration_executed": round(flops_exec / 1e9, 3),
          "mfu": None if not peak else round(flops * rate / peak, 4),
          "mfu_useful": None if not peak else round(flops_useful * rate / peak, 4),
          "hfu": None if not peak else round(flops_exec * rate / peak, 4),
          "energy_first_last": [float(energies[0]), float(energies[-1])]}


def results_path(device_kind: str, platform_name: str = "", date: str = "") -> str:
  """Where `--results_copy` writes: benchmarks/results/<device>[_<date>].json.

  Args:
    device_kind: `device.device_kind` ("cpu" on every CPU, so a CPU adds its model name).
    platform_name: `device.platform`.
    date: the UTC date, e.g. "2026-12-06" ("" for none).
  Returns:
    The path.
  """
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  kind = device_kind
  if platform_name == "cpu" or device_kind.lower() == "cpu":
    kind = f"cpu {perf.cpu_model()}"
  name = re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or "unknown"
  return os.path.join(ROOT, "benchmarks", "results", f"{name}{'_' + date if date else ''}.json")


def write_json(obj: Any, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)


MODELS = ("cvae", "discvae", "vae")  # configs/lfw.py's models.
DTYPES = ("float32", "bfloat16", "float16", "auto")  # perf.COMPUTE_DTYPES (no jax import here).
WHATS = ("train", "infer", "compile")


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before anything is compiled or measured.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags; `models`, `batches`, `dtypes`, `what` as lists and `overrides` as a dict.
  Raises:
    SystemExit: (status 2, one `error:` line) a flag value that cannot be measured.
  """
  p = timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="cvae,discvae", help="Comma list: cvae, discvae, vae.")
  p.add_argument("--batches", default="32", help="Comma list of global batch sizes.")
  p.add_argument("--dtypes", default="float32", help="Comma list of compute dtypes "
                 "(float32, bfloat16, auto).")
  p.add_argument("--what", default="train,infer",
                 help="Comma list: train, infer; or compile (the train step's compile only).")
  p.add_argument("--repeats", type=int, default=3, help="Timed calls after one warm-up.")
  p.add_argument("--infer_images", type=int, default=0,
                 help="Images per inference call. 0: the batch size, timed for every batch; "
                 "N > 0: N images, timed once per (model, dtype), with the first batch.")
  p.add_argument("--infer_steps", type=int, default=10, help="Inference steps per call.")
  p.add_argument("--pipelined", type=int, default=0,
                 help="N > 0: also time N train dispatches back to back, waited for once "
                 "(the device never idle between steps, as in train.py's dispatch-ahead loop).")
  p.add_argument("--infer_repeats", type=int, default=0,
                 help="Timed inference calls after the first (default: --repeats).")
  p.add_argument("--model_overrides", default="",
                 help="Comma list of key=value on the config, e.g. model.width=0.25.")
  p.add_argument("--xla_cpu_flags", default="recommended", help=XLA_CPU_FLAGS_HELP)
  p.add_argument("--compilation_cache_dir", default="",
                 help="Persistent XLA cache dir ('' = off, so compile times are real).")
  p.add_argument("--max_pool", default="auto", choices=("auto", "window", "blocks"),
                 help="The max-pooling form (models.max_pool); auto: the library's choice.")
  p.add_argument("--conv_output_split", default="auto", choices=("auto", "whole", "split"),
                 help="Wide convolutions as one or in blocks of outputs "
                 "(perf.conv_output_split); auto: the library's choice.")
  p.add_argument("--offset_polyphase", default="auto", choices=("auto", "on", "off"),
                 help="The offset polyphase form of upsample + 3x3 layers "
                 "(perf.offset_polyphase); auto: the library's choice (on on CPU only).")
  p.add_argument("--huge_pages", default="auto", choices=("auto", "off"), help=HUGE_PAGES_HELP)
  p.add_argument("--out", default="", help="Also write the JSON here.")
  p.add_argument("--results_copy", action="store_true",
                 help="Also write the results as a new record, benchmarks/results/"
                 "<device>_<UTC date>.json (a CPU named by its model); refused where that "
                 "file exists, so no cited record is replaced. Off by default.")
  p.add_argument("--no_results_copy", action="store_true",
                 help="The default since 2026-12-06 (no copy); kept for old command lines.")
  p.add_argument("--smoke", action="store_true",
                 help="A tiny model (32x32, width 1/16), 1 repeat, 2 inference steps: it "
                 "replaces --repeats and --infer_steps; no --results_copy.")
  args = p.parse_args(argv)
  p.check_at_least(args, {"repeats": 1, "infer_steps": 1, "infer_images": 0, "pipelined": 0,
                           "infer_repeats": 0})
  args.models = p.comma_list("--models", args.models, MODELS)
  args.batches = p.positive_ints("--batches", args.batches)
  args.dtypes = p.comma_list("--dtypes", args.dtypes, DTYPES)
  args.what = p.comma_list("--what", args.what, WHATS)
  if args.smoke:
    args.model_overrides = ",".join(filter(None, [
        *(f"{k}={v}" for k, v in SMOKE_OVERRIDES.items()), args.model_overrides]))
    args.repeats, args.infer_steps = 1, 2
  if args.results_copy and args.smoke:
    p.error("--results_copy with --smoke: a smoke run is no record; drop one of the two.")
  if args.results_copy and args.no_results_copy:
    p.error("--results_copy with --no_results_copy: they say opposite things; pick one.")
  args.overrides = p.key_values("--model_overrides", args.model_overrides)
  return args


@library_errors_as_lines  # The library's refusal of a value (a config, an input): one line.
def main(argv=None) -> dict:
  """Measures what the command line asks for (see the module docstring).

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The results, as printed.
  Raises:
    SystemExit: a flag value that cannot be measured, or the library's refusal of one (an
      `A2IError`), as one `error:` line.
  """
  args = parse_args(argv)
  return _run(args, from_command_line=argv is None)


def _run(args: argparse.Namespace, from_command_line: bool) -> dict:
  """`main`'s measurements for the checked flags `args`."""
  if from_command_line:  # A command line (not a caller in this process) can be re-executed.
    huge_pages(args.huge_pages)
  timing.start_turns()  # Under compare_cpu.sh's turn-taking: all work in this process's turns.
  # XLA flags must be in place before the backend starts: nothing above touched jax.
  set_xla_cpu_flags(args.xla_cpu_flags)
  import jax  # pylint: disable=import-outside-toplevel
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel
  if args.compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache_dir)
  cache = (timing.compilation_cache_off() if not args.compilation_cache_dir else
           {"compilation_cache": args.compilation_cache_dir,
            "compilation_cache_dir_env": os.environ.get("JAX_COMPILATION_CACHE_DIR", "")})

  overrides = args.overrides
  if args.max_pool != "auto":
    from a2i_jax.models import layers  # pylint: disable=import-outside-toplevel
    layers.MAX_POOL_FORM = args.max_pool
  if args.conv_output_split != "auto":
    from a2i_jax.models import conv_grad  # pylint: disable=import-outside-toplevel
    conv_grad.CONV_OUTPUT_SPLIT = args.conv_output_split
  if args.offset_polyphase != "auto":
    from a2i_jax.models import layers  # pylint: disable=import-outside-toplevel
    layers.POLYPHASE_OFFSET = args.offset_polyphase
  device = jax.devices()[0]
  import flax  # pylint: disable=import-outside-toplevel
  info = {"device_kind": device.device_kind, "platform": device.platform,
          "num_devices_used": 1, "jax": jax.__version__, "flax": flax.__version__,
          "python": platform.python_version(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
          # Caps oneDNN's instruction set, and so XLA's own convolutions' (their matrix
          # product is oneDNN's); compare_cpu.sh ISA=avx2 sets it.
          "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
          "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]), **cache,
          "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
  if device.platform == "cpu":
    info["cpu"] = cpu_peak()
    info["cpu"]["model_name"] = perf.cpu_model()
  copy_path = ""
  if args.results_copy:  # Checked before anything is measured: a record is never replaced.
    copy_path = results_path(device.device_kind, device.platform, info["date_utc"][:10])
    if os.path.exists(copy_path):
      timing.refuse(f"--results_copy: {os.path.relpath(copy_path, ROOT)} exists (a record); "
                    "move it away, or write this run with --out=PATH instead.")
  results = {"info": info, "cases": []}
  what, batches = set(args.what), args.batches
  for model_name in args.models:
    for batch in batches:
      for dtype in args.dtypes:
        case = Case(model_name, batch, dtype)
        config = make_config(case, overrides)
        resolved = perf.compute_dtype(dtype)
        peak, peak_source = device_peak(device, jax.numpy.dtype(resolved).name)
        row = {"model": model_name, "batch": batch, "dtype": dtype,
               "compute_dtype": jax.numpy.dtype(resolved).name,
               "image_size": config.model.image_size, "width": config.model.width,
               "peak_flop_per_s": peak, "peak_source": peak_source}
        if "train" in what or "compile" in what:
          row["train"] = bench_train(case, config, args.repeats, peak,
                                     compile_only="train" not in what,
                                     pipelined=args.pipelined)
          print(json.dumps({"case": [model_name, batch, dtype], "train": row["train"]}),
                file=sys.stderr, flush=True)
        if "infer" in what and (not args.infer_images or batch == batches[0]):
          n = args.infer_images or batch
          row["infer"] = bench_infer(case, config, n, args.infer_steps,
                                     args.infer_repeats or args.repeats, peak)
          print(json.dumps({"case": [model_name, batch, dtype], "infer": row["infer"]}),
                file=sys.stderr, flush=True)
        results["cases"].append(row)
        if args.out:  # After every case, so a run cut short keeps what it measured.
          write_json(results, args.out)
  text = json.dumps(results, indent=2)
  print(text)
  if args.out:
    write_json(results, args.out)
  if copy_path:
    write_json(results, copy_path)
  return results


if __name__ == "__main__":
  main()
