"""Where a train step's time goes: a JAX profiler trace, attributed to kernels and layers.

  python benchmarks/profile_step.py --model=cvae --batch=8 --top=25          # XLA:CPU
  python benchmarks/profile_step.py --model=discvae --batch=256 --dtype=bfloat16 --out=p.json  # GPU
  python benchmarks/profile_step.py --smoke                                  # tiny, checks it

Runs the library's train step (as bench.py builds it, with the library's compile options) a
few times under `jax.profiler.trace`, reads the Perfetto JSON the profiler writes, and
attributes each kernel's time, summed over the traced steps, to

* a category: convolution (forward, and backward: split into input and weight gradients
  where the kernel names say so, as cuDNN's do), matmul (on XLA:CPU also the per-tap weight
  gradients), BatchNorm,
  the optimiser update (what runs after the gradients: Adam, the finiteness guard), other
  forward / backward work (elementwise fusions, reductions, the losses), layout copies and
  transposes, collectives, host-device copies;
* a layer: the Flax module path in the op's name stack (e.g. `decoder/Conv_3`), so the
  convolutions can be read layer by layer;
* host gaps: the traced wall time when no kernel was running on the device (dispatch,
  Python, synchronisation).

The kernels are told apart by the HLO instruction each one runs (on GPU the kernel event's
`hlo_op` argument, on XLA:CPU, with `--xla_cpu_enable_xprof_traceme`, the event's own name),
looked up in the compiled program's HLO text, whose metadata carries the JAX name stack.
Prints the categories, the layers and the top kernels, and with `--out` writes them as JSON.
`--what=infer` profiles the library's posterior inference instead (`infer_latents` on
`--batch` images, `--infer_steps` Adam steps in one call; the attribution is of the loop's
program: its step time is the loop calls' own, each waited for, and the init and finish
programs' time is reported apart, as `init_finish_ms` per Adam step).
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (benchmarks/bench.py; imports no jax at module level)

# `%name = type op(...), ..., metadata={op_name="..."}` in the compiled HLO text.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_OPCODE = re.compile(r"\)?\s*([a-z][\w\-]*)\(")
_CUSTOM_TARGET = re.compile(r'custom_call_target="([^"]*)"')
_FUSION_KIND = re.compile(r"kind=(k\w+)")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
# Flax module scopes in a name stack: capitalised components or the model's own blocks.
_MODULE = re.compile(r"^(?:[A-Z]\w*|encoder\w*|decoder\w*|trunk|head|mix|y_embed|fg\w*|bg\w*|gate\w*|"
                     r"background\w*|foreground\w*|mu|logvar)(?:_\d+)?$")


def hlo_metadata(hlo_text: str) -> dict:
  """{instruction name: (opcode, op_name, what it calls)} for every instruction of the
  compiled HLO; a fusion's op_name is completed from its fused computation when it has none."""
  info, computations, current = {}, collections.defaultdict(list), None
  for line in hlo_text.splitlines():
    if line and not line.startswith(" ") and "{" in line and "=" not in line.split("{")[0]:
      current = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%").split("(")[0]
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, rest = m.group(1), m.group(2)
    op = _OPCODE.search(rest.split("metadata=")[0])
    opcode = op.group(1) if op else ""
    if opcode == "custom-call":
      target = _CUSTOM_TARGET.search(rest)
      opcode = f"custom-call:{target.group(1) if target else ''}"
    op_name = _OP_NAME.search(rest)
    calls = _CALLS.search(rest)
    info[name] = (opcode, op_name.group(1) if op_name else "", calls.group(1) if calls else "")
    if current:
      computations[current].append(name)
  for name, (opcode, op_name, calls) in list(info.items()):
    if calls and calls in computations:
      inner = [info[i] for i in computations[calls]]
      if not op_name:  # The fused computation's first named op stands for the fusion.
        op_name = next((o for _, o, _ in inner if o), "")
      if any(_is_conv(o) for o, _, _ in inner):
        opcode = "convolution"
      elif opcode == "fusion" and any(o == "dot" for o, _, _ in inner):
        opcode = "dot"
      info[name] = (opcode, op_name, calls)
  return info


def _is_conv(opcode: str) -> bool:
  """A convolution: XLA's own, or a custom call to cuDNN's (not a `convert`)."""
  return opcode == "convolution" or (opcode.startswith("custom-call:") and
                                     "conv" in opcode.split(":", 1)[1].lower())


def layer_of(op_name: str) -> str:
  """The Flax module path in a name stack, e.g. "decoder/Conv_3" ("" if none)."""
  parts = [p for p in op_name.split("/") if _MODULE.match(p)]
  return "/".join(parts)


def category_of(opcode: str, op_name: str, kernel: str) -> str:
  """The kind of work one kernel does (see the module docstring)."""
  k, o = kernel.lower(), op_name
  backward = "transpose(" in o
  if _is_conv(opcode) or re.search(
      r"(?<![a-z])conv(?!ert)|cudnn|xmma|fprop|dgrad|wgrad|implicit_gemm", k):
    if "wgrad" in k:  # cuDNN's kernel names say which gradient; XLA:CPU's do not.
      return "convolution: weight gradient"
    if "dgrad" in k:
      return "convolution: input gradient"
    return "convolution: backward (input or weight gradient)" if backward else \
        "convolution: forward"
  if opcode in ("dot", "custom-call:__cublas$gemm", "custom-call:__cublas$lt$matmul") or \
     re.search(r"gemm|cublas|matmul", k):
    return "matmul"
  if re.search(r"all-reduce|all-gather|reduce-scatter|collective|nccl", k + opcode):
    return "collectives"
  if re.search(r"memcpy|memset|copy-start|copy-done|htod|dtoh", k):
    return "host-device copies"
  if "BatchNorm" in o or "batch_norm" in o:
    return "BatchNorm"
  if opcode in ("copy", "transpose") or re.search(r"^(copy|transpose)", k):
    return "layout: copies and transposes"
  if o and "jvp(" not in o and "transpose(" not in o and not layer_of(o):
    return "optimiser update and step bookkeeping"
  return "backward: other" if backward else "forward: other"


def _device_events(trace: dict) -> tuple[list, str]:
  """The kernel events: on a GPU those of its streams, on XLA:CPU the per-thunk events."""
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  process = {e["pid"]: e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
  device_pids = {pid for pid, name in process.items() if "/device:" in name}
  spans = [e for e in events if e.get("ph") == "X" and "dur" in e]
  if device_pids:
    return [e for e in spans if e["pid"] in device_pids], "device"
  return spans, "host"


def _busy_us(events: list) -> float:
  """The union of the events' intervals, in microseconds."""
  total, end = 0.0, float("-inf")
  for start, stop in sorted((e["ts"], e["ts"] + e["dur"]) for e in events):
    if stop <= end:
      continue
    total += stop - max(start, end)
    end = stop
  return total


def _hlo_key(event: dict, hlo: dict) -> str:
  """The HLO instruction a kernel event runs ("" if not found). A kernel inside a CUDA graph
  (XLA's command buffers) carries the command buffer as its `hlo_op`, and the fusion's name
  with "_<n>" for ".<n>" as its own."""
  for key in (event.get("args", {}).get("hlo_op"), event["name"],
              re.sub(r"_(\d+)$", r".\1", event["name"])):
    if key and key in hlo:
      return key
  return ""


def attribute(trace: dict, hlo: dict, steps: int, wall_s: float, top: int = 25,
              module: str = "") -> dict:
  """Sums the kernels' time per category, per layer and per kernel (ms per step).

  With `module`, the kernels of other programs (events whose `hlo_module` argument does not
  contain it) count only towards the busy time. On XLA:CPU this matters twice over: the
  programs' kernels share names (`ynn_fusion.2` of `init` would otherwise count as the loop's
  instruction of that name)."""
  events, where = _device_events(trace)
  all_events = events
  if module:  # On XLA:CPU an event must name its program; GPU kernel events may not.
    unnamed = module if where == "device" else ""
    events = [e for e in events if module in str(e.get("args", {}).get("hlo_module", unnamed))]
  keys = [_hlo_key(e, hlo) for e in events]
  known = [(k, e) for k, e in zip(keys, events) if k]
  by_cat, by_layer, by_kernel = (collections.Counter() for _ in range(3))
  if where == "device":  # Kernels not matched to the HLO: by their own names.
    for k, e in zip(keys, events):
      if not k:
        by_cat[category_of("", "", e["name"]) + " (by kernel name)"] += e["dur"] / 1e3 / steps
  for key, e in known:
    opcode, op_name, _ = hlo[key]
    cat = category_of(opcode, op_name, e["name"])
    ms = e["dur"] / 1e3 / steps
    by_cat[cat] += ms
    if cat.startswith("convolution") or cat == "BatchNorm":
      by_layer[f"{layer_of(op_name) or '?'} | {cat}"] += ms
    by_kernel[f"{key} | {cat} | {layer_of(op_name)}"] += ms
  busy_ms = _busy_us(all_events if where == "device" else [e for _, e in known]) / 1e3 / steps
  arg_keys = collections.Counter(k for e in all_events[:2000] for k in e.get("args", {}))
  step_ms = wall_s * 1e3 / steps
  return {"events": where, "kernels_matched": len(known), "kernel_events": len(events),
          "step_ms": round(step_ms, 2), "kernel_busy_ms": round(busy_ms, 2),
          "host_gap_ms": round(max(step_ms - busy_ms, 0.0), 2),
          # The events' argument names: how to check the matching on a new backend.
          "event_arg_keys": dict(arg_keys.most_common(12)),
          "categories_ms": {k: round(v, 3) for k, v in by_cat.most_common()},
          "layers_ms": {k: round(v, 3) for k, v in by_layer.most_common(top)},
          "top_kernels_ms": {k: round(v, 3) for k, v in by_kernel.most_common(top)}}


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before jax is imported.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags, `overrides` added as a dict.
  Raises:
    SystemExit: (status 2, one `error:` line) a flag value that cannot be profiled.
  """
  p = bench.timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="cvae", choices=bench.MODELS)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--dtype", default="float32", choices=bench.DTYPES)
  p.add_argument("--steps", type=int, default=3, help="Traced steps (after a warm-up).")
  p.add_argument("--top", type=int, default=25)
  p.add_argument("--model_overrides", default="")
  p.add_argument("--what", default="train", choices=("train", "infer"),
                 help="train, or infer: the library's posterior inference (`--batch` images).")
  p.add_argument("--infer_steps", type=int, default=50, help="Inference steps per call.")
  p.add_argument("--raw_dir", default="",
                 help="Also keep the raw trace and the compiled HLO (gzipped) in this folder.")
  p.add_argument("--out", default="", help="Also write the attribution as JSON here.")
  p.add_argument("--compilation_cache_dir", default="",
                 help="Persistent XLA cache (reading the loop's HLO compiles it a second time).")
  p.add_argument("--smoke", action="store_true", help="Tiny model (32x32, width 1/16).")
  p.add_argument("--xla_cpu_flags", default="recommended", help=bench.XLA_CPU_FLAGS_HELP)
  args = p.parse_args(argv)
  p.check_at_least(args, {"batch": 1, "steps": 1, "top": 1, "infer_steps": 1})
  args.overrides = p.key_values("--model_overrides", args.model_overrides)
  return args


@bench.library_errors_as_lines  # Was: a traceback.
def main(argv=None):
  """Profiles one step (see the module docstring) and prints the attribution.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be profiled, or the library's refusal of one (an
      `A2IError`: an override the model refuses), as one `error:` line.
  """
  args = parse_args(argv)
  bench.set_xla_cpu_flags(args.xla_cpu_flags)  # Before JAX starts its backend.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_cpu_enable_xprof_traceme=true").strip()
  import time  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  if args.compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache_dir)
  from a2i_jax import perf  # pylint: disable=import-outside-toplevel

  overrides = args.overrides
  if args.smoke:
    overrides = {**bench.SMOKE_OVERRIDES, **overrides}
  config = bench.make_config(bench.Case(args.model, args.batch, args.dtype), overrides)
  loop_s = [0.0]  # Inference: the loop programs' own wall time while traced.
  if args.what == "train":
    steps, state, data, _ = bench.train_program(config, max(512, 2 * args.batch))
    fn = perf.jit(steps, donate_argnums=(0,))
    key = jax.random.key(1)
    compiled = fn.lower(state, data, key).compile()
    holder = [state]

    def step():
      holder[0], m = compiled(holder[0], data, key)
      jax.block_until_ready(m)
  else:  # The library's posterior inference: infer_latents, `--infer_steps` steps per call.
    step = bench.inference_call(config, args.batch, steps=args.infer_steps)
    run, run_args = step.fns["run"], []

    def recording_run(*a):
      # Keeps the shapes of the loop's arguments, to read its HLO, and times each loop call
      # (waited for): the traced wall time also holds the init and finish programs, whose
      # kernels the attribution leaves out, so only the loop's own time is the step's.
      if not run_args:
        run_args.append(jax.tree_util.tree_map(
            lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding), a))
      t0 = time.perf_counter()
      out = jax.block_until_ready(run(*a))
      loop_s[0] += time.perf_counter() - t0
      return out
    step.fns["run"] = recording_run
    step()
    compiled = run.lower(*run_args[0]).compile()
  step()
  step()
  hlo = hlo_metadata(compiled.as_text())
  trace_dir = tempfile.mkdtemp(prefix="a2i_trace_")
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    loop_s[0] = 0.0
    t0 = time.perf_counter()
    for _ in range(args.steps):
      step()
    wall = time.perf_counter() - t0
  # Inference: the step is the loop's (before 2026-12-01 the whole call's, so "host gaps"
  # also held the init and finish programs: ~155 of 1,097 ms for the paper disCVAE on CPU).
  # On a GPU the attribution's busy time counts every program's kernels, so the wall stays whole.
  ends_s = wall - loop_s[0] if args.what == "infer" and jax.default_backend() == "cpu" else 0.0
  per = args.steps * (args.infer_steps if args.what == "infer" else 1)
  path = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)[0]
  with gzip.open(path) as f:
    trace = json.load(f)
  if args.raw_dir:
    os.makedirs(args.raw_dir, exist_ok=True)
    stem = os.path.join(args.raw_dir, f"{args.model}_{args.what}_b{args.batch}")
    shutil.copy(path, f"{stem}_trace.json.gz")
    with gzip.open(f"{stem}_hlo.txt.gz", "wt") as f:
      f.write(compiled.as_text())
  result = {"model": args.model, "batch": args.batch, "dtype": args.dtype, "what": args.what,
            "backend": jax.default_backend(), "device": str(jax.devices()[0]),
            "jax": jax.__version__, "steps": args.steps,
            # Inference: per Adam step (each traced call runs `infer_steps` of them).
            **({"infer_steps": args.infer_steps, "ms_per": "Adam step"} if args.what == "infer"
               else {"ms_per": "train step"}),
            # Host time outside the loop calls: the init and finish programs, and Python.
            **({"init_finish_ms": round(ends_s * 1e3 / per, 2)} if ends_s else {}),
            **attribute(trace, hlo, per, wall - ends_s, args.top,
                        module="run" if args.what == "infer" else "")}
  print(f"{args.model} b{args.batch} {args.dtype} on {result['device']}: "
        f"{result['step_ms']} ms/step traced, kernels busy {result['kernel_busy_ms']} ms, "
        f"host gaps {result['host_gap_ms']} ms ({result['kernels_matched']} of "
        f"{result['kernel_events']} {result['events']} events matched to the HLO)"
        + (f"; init and finish {result['init_finish_ms']} ms per Adam step besides"
           if "init_finish_ms" in result else ""))
  for title, key in (("category", "categories_ms"), ("layer (convolutions, BatchNorm)",
                                                      "layers_ms"), ("kernel", "top_kernels_ms")):
    print(f"\n| {title} | ms / step |\n|---|---|")
    for name, ms in result[key].items():
      print(f"| {name} | {ms} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
