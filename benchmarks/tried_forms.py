"""Forms of the CPU hot spots that were measured and not adopted (BENCHMARKS.md, "3x3
upsampling layers at the low resolution", "Tried here and not changed"); prints JSON lines.

  python benchmarks/tried_forms.py --what=winograd   # F(2x2, 3x3) against the convolution
  python benchmarks/tried_forms.py --what=bdot       # Winograd's 16 products, five ways
  python benchmarks/tried_forms.py --what=heads      # 5x5 few-output heads, several ways
  python benchmarks/tried_forms.py --what=infer_parts --model=discvae   # init / run / finish
  python benchmarks/tried_forms.py --what=term_report --model=discvae --repeats=3
  python benchmarks/tried_forms.py --what=tiered_chunk --model=discvae --repeats=2

The process starts with the XLA flags the entry points add on this CPU (`--xla_cpu_flags`;
before 2026-12-02 it added none). Kept so that the figures can be measured again on another
machine: where one of these wins there, it is the place to start. `infer_parts` times the three
programs of one `infer_latents` call (32 images, 10 steps) with `init` and `finish` compiled
with `models.CHEAP_COMPILE` (the library's choice) and without it. `term_report` times the
divergence report (`train_lib.make_term_report`, the paper model at `--batch` on one device)
against its form before 2026-12-02, a forward and backward pass per loss term (`jax.grad` of
each): trace, lower, compile and one run, a fresh jit per round, the forms alternated, the
persistent cache off, each compiled program run twice; and the largest relative difference of
their numbers. `tiered_chunk` times the first `infer_latents` call (32 images, 10 steps) with
the library's step chunk against a tiered one: the chunk compiled at LLVM level 0
(`models.CHEAP_COMPILE`) to start at once while the level-1 program compiles in a thread, taken
over at the first chunk after it is ready; and whether one chunk's outputs from the two compiles
are the same to the bit.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import (ArgumentParser, compilation_cache_off,  # noqa: E402  (benchmarks/timing.py)
                    median_time)
import bench  # noqa: E402  (benchmarks/bench.py; imports no jax at module level)

# Winograd F(2x2, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A on 4x4 input tiles.
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def _conv(x, w, groups=1):
  import jax  # pylint: disable=import-outside-toplevel
  p = w.shape[0] // 2
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((p, p), (p, p)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=groups)


def _combine(coefficients, terms):
  out = None
  for c, t in zip(coefficients, terms):
    if c:
      v = t if c == 1 else (-t if c == -1 else c * t)
      out = v if out is None else out + v
  return out


def _winograd(x, w):
  """A 3x3 "same" convolution as Winograd F(2x2, 3x3) (even H and W)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  b, h, wd, c = x.shape
  o = w.shape[-1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  d = [[xp[:, r:r + h:2, s:s + wd:2, :] for s in range(4)] for r in range(4)]
  rows = [[_combine(_BT[i], [d[r][s] for r in range(4)]) for s in range(4)] for i in range(4)]
  v = jnp.stack([_combine(_BT[j], rows[i]) for i in range(4) for j in range(4)]).reshape(16, -1, c)
  u = jnp.einsum("ir,rsco,js->ijco", _G, w, _G).reshape(16, c, o)
  m = jax.lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,)))).reshape(4, 4, -1, o)
  y = jnp.stack([jnp.stack([_combine(_AT[a], [_combine(_AT[e], [m[i, j] for j in range(4)])
                                              for i in range(4)]) for e in range(2)])
                 for a in range(2)])  # [2 (row phase), 2 (column phase), T, O]
  return y.reshape(2, 2, b, h // 2, wd // 2, o).transpose(2, 3, 0, 4, 1, 5).reshape(b, h, wd, o)


def _heads_shifted(x, w):
  """A k x k "same" convolution as one product to k^2 x the outputs, then shifted sums."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  k, _, c, o = w.shape
  p = k // 2
  b, h, wd, _ = x.shape
  prod = (x.reshape(-1, c) @ w.transpose(2, 0, 1, 3).reshape(c, k * k * o)).reshape(
      b, h, wd, k * k, o)
  prod = jnp.pad(prod, ((0, 0), (p, p), (p, p), (0, 0), (0, 0)))
  return sum(prod[:, u:u + h, v:v + wd, u * k + v] for u in range(k) for v in range(k))


def _heads_grouped(n):
  def f(x, w):
    k, _, c, o = w.shape
    wg = w.reshape(k, k, n, c // n, o).transpose(0, 1, 3, 2, 4).reshape(k, k, c // n, n * o)
    y = _conv(x, wg, n)
    return y.reshape(y.shape[:3] + (n, o)).sum(3)
  return f


def _heads_split(x, w):
  c = x.shape[-1] // 2
  return _conv(x[..., :c], w[:, :, :c]) + _conv(x[..., c:], w[:, :, c:])


def _time_forms(forms, x, w, repeats, grads=("dx",)):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  ref = _conv(x, w)
  g = jax.random.normal(jax.random.key(3), ref.shape)
  for name, f in forms:
    fns = {"fwd": (jax.jit(f), (x, w)),
           "dx": (jax.jit(lambda x, w, g, f=f: jax.vjp(lambda a: f(a, w), x)[1](g)[0]), (x, w, g)),
           "dw": (jax.jit(lambda x, w, g, f=f: jax.vjp(lambda b: f(x, b), w)[1](g)[0]), (x, w, g))}
    row = {"x": list(x.shape), "w": list(w.shape), "form": name,
           "max_rel_err": float(jnp.max(jnp.abs(fns["fwd"][0](x, w) - ref)) /
                                float(jnp.max(jnp.abs(ref))))}
    for label in ("fwd",) + tuple(grads):
      fn, a = fns[label]
      jax.block_until_ready(fn(*a))
      row[f"{label}_ms"] = round(1e3 * median_time(lambda: jax.block_until_ready(fn(*a)),
                                                   repeats)[0], 2)
    print(json.dumps(row), flush=True)


def winograd(args):
  import jax  # pylint: disable=import-outside-toplevel
  for s, cin, cout in ((16, 256, 512), (32, 128, 256), (8, 256, 1024)):
    x = jax.random.normal(jax.random.key(0), (args.batch, s, s, cin))
    w = jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) / np.sqrt(9 * cin)
    _time_forms((("conv", _conv), ("winograd", _winograd)), x, w, args.repeats, ("dx", "dw"))


def bdot(args):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  for t, c, o in ((2048, 256, 512), (8192, 128, 256)):
    v = jax.random.normal(jax.random.key(0), (16, t, c))
    u = jax.random.normal(jax.random.key(1), (16, c, o))
    forms = {
        "batched dot_general": (lambda v, u: jax.lax.dot_general(
            v, u, (((2,), (1,)), ((0,), (0,)))), (v, u)),
        "16 products": (lambda v, u: jnp.stack([v[i] @ u[i] for i in range(16)]), (v, u)),
        "einsum": (lambda v, u: jnp.einsum("ktc,kco->kto", v, u), (v, u)),
        "grouped 1x1 convolution": (lambda a, b: jax.lax.conv_general_dilated(
            a, b, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=16), (v.transpose(1, 0, 2).reshape(1, t, 1, 16 * c),
                                      u.transpose(1, 0, 2).reshape(1, 1, c, 16 * o))),
        "one product (x16 in the row)": (lambda a, b: a @ b, (v[0], u[0]))}
    for name, (f, a) in forms.items():
      fn = jax.jit(f)
      jax.block_until_ready(fn(*a))
      ms = 1e3 * median_time(lambda: jax.block_until_ready(fn(*a)), args.repeats)[0]
      ms *= 16 if name.startswith("one product") else 1
      print(json.dumps({"products": [16, t, c, o], "form": name, "ms": round(ms, 2),
                        "gflop_s": round(16 * t * c * o * 2 / ms / 1e6, 1)}), flush=True)


def heads(args):
  import jax  # pylint: disable=import-outside-toplevel
  for cin, cout in ((64, 6), (32, 4)):
    x = jax.random.normal(jax.random.key(0), (args.batch, 64, 64, cin))
    w = jax.random.normal(jax.random.key(1), (5, 5, cin, cout)) * 0.05
    forms = [("conv", _conv), ("product, shifted sums", _heads_shifted),
             ("two 32-input convolutions", _heads_split)]
    if cin == 64:
      forms += [(f"grouped x{n}", _heads_grouped(n)) for n in (2, 4, 8)]
    _time_forms(forms, x, w, args.repeats)


def infer_parts(args):
  import jax  # pylint: disable=import-outside-toplevel
  from a2i_jax import inference  # pylint: disable=import-outside-toplevel
  from a2i_jax.inference import posterior  # pylint: disable=import-outside-toplevel
  config = bench.make_config(bench.Case(args.model, args.batch, "float32"), {})
  infer = bench.inference_call(config, args.batch, steps=10)
  saved = posterior.CHEAP_COMPILE
  try:
    for variant in ("cheap", "optimised", "cheap", "optimised"):
      posterior.CHEAP_COMPILE = saved if variant == "cheap" else {}
      fns = infer.fns = dict(inference.make_inference_fns(infer.model, infer.options))
      fns.pop("compile_ahead")  # Each program's first call compiles it, as it did then.
      times = {}
      for name in ("init", "run", "finish"):
        def timed(*a, f=fns[name], name=name):
          t = time.perf_counter()
          out = jax.block_until_ready(f(*a))
          times.setdefault(name, []).append(time.perf_counter() - t)
          return out
        fns[name] = timed
      infer()
      first = {k: round(v[0], 2) for k, v in times.items()}
      times.clear()
      for _ in range(args.repeats):
        infer()
      print(json.dumps({"model": args.model, "init_finish": variant, "first_call_s": first,
                        "median_ms": {k: round(1e3 * float(np.median(v)), 1)
                                      for k, v in times.items()}}), flush=True)
  finally:
    posterior.CHEAP_COMPILE = saved


def term_report(args):
  """The divergence report: the library's (one forward pass, each term's gradient a transpose
  of its linearisation) against a `jax.grad` per term, as it was before 2026-12-02."""
  import jax  # pylint: disable=import-outside-toplevel
  from a2i_jax import models, parallel, perf, train_lib  # pylint: disable=import-outside-toplevel
  from a2i_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  compilation_cache_off()
  config = bench.make_config(bench.Case(args.model, args.batch, "float32"), {})
  _, state, data, mesh = bench.train_program(config, 2 * args.batch)
  model = models.create_model(config.model)
  loss_fn = train_lib._make_loss_fn(model, config)  # pylint: disable=protected-access

  def per_term_grad():
    def report(state, data, key):  # train_lib.make_term_report before 2026-12-02.
      k_batch, k_step = jax.random.split(jax.random.fold_in(key, state.step))
      batch = jax.lax.with_sharding_constraint(
          pipeline.sample_batch(k_batch, data, config.batch_size), parallel.batch_sharded(mesh))
      x, y, m, rngs = train_lib._step_inputs(batch, k_step, config)  # pylint: disable=protected-access
      terms, _, _ = loss_fn(state.params, state.batch_stats, x, y, m, rngs)
      return {n: (terms[n] / x.shape[0], train_lib.global_norm(jax.grad(
          lambda p, n=n: loss_fn(p, state.batch_stats, x, y, m, rngs)[0][n])(state.params)))
              for n in terms}
    return perf.jit(report, extra_options=models.CHEAP_COMPILE)

  forms = {"linearize": lambda: train_lib.make_term_report(model, config, mesh),
           "grad_per_term": per_term_grad}
  key, values = jax.random.key(1), {}
  for _ in range(args.repeats):
    for name, make in forms.items():
      t = [time.perf_counter()]
      traced = make().trace(state, data, key)
      t.append(time.perf_counter())
      lowered = traced.lower()
      t.append(time.perf_counter())
      compiled = lowered.compile()
      t.append(time.perf_counter())
      values[name] = jax.device_get(compiled(state, data, key))
      t.append(time.perf_counter())
      jax.block_until_ready(compiled(state, data, key))
      t.append(time.perf_counter())
      print(json.dumps({"model": args.model, "batch": args.batch, "form": name, **{
          f"{stage}_s": round(b - a, 2) for stage, a, b in zip(
              ("trace", "lower", "compile", "run", "run_again"), t, t[1:])}}), flush=True)
  a, b = values["linearize"], values["grad_per_term"]
  print(json.dumps({"model": args.model, "max_relative_difference": float(max(
      abs(float(x) - float(y)) / max(abs(float(y)), 1e-30)
      for n in b for x, y in zip(a[n], b[n])))}), flush=True)


class _TieredChunk:
  """A step chunk that starts at LLVM level 0 and switches to the level-1 program (compiled in
  a thread meanwhile) at the first call after that compile ends. It waits for each level-0
  chunk before the next call: dispatched asynchronously, every chunk would be queued at level 0
  before the switch could happen."""

  def __init__(self, fn):
    self.fn, self.fast, self.best, self.thread, self.used = fn, None, None, None, []
    self.times = {}

  def __call__(self, *args):
    import threading  # pylint: disable=import-outside-toplevel
    import jax  # pylint: disable=import-outside-toplevel
    from a2i_jax import models  # pylint: disable=import-outside-toplevel
    if self.fast is None:
      lowered = self.fn.lower(*args)

      def optimised():
        t = time.perf_counter()
        self.times["level1"] = (lowered.compile(), round(time.perf_counter() - t, 2))
      self.thread = threading.Thread(target=optimised, daemon=True)
      self.thread.start()
      t = time.perf_counter()
      self.fast = lowered.compile(compiler_options=models.CHEAP_COMPILE)
      self.times["level0_s"] = round(time.perf_counter() - t, 2)
    elif self.best is None:
      jax.block_until_ready(args)
    if self.best is None and not self.thread.is_alive():
      self.best = self.times["level1"][0]
    self.used.append(1 if self.best is not None else 0)
    return (self.best or self.fast)(*args)


def tiered_chunk(args):
  import jax  # pylint: disable=import-outside-toplevel
  from a2i_jax import inference, models  # pylint: disable=import-outside-toplevel
  compilation_cache_off()
  config = bench.make_config(bench.Case(args.model, args.batch, "float32"), {})
  infer = bench.inference_call(config, args.batch, steps=10)
  for _ in range(args.repeats):
    for form in ("library", "tiered"):
      fns = infer.fns = dict(inference.make_inference_fns(infer.model, infer.options))
      fns.pop("compile_ahead")  # The chunk compiled as the call reaches it, in both forms.
      if form == "tiered":
        fns["run"] = _TieredChunk(fns["run"])
      t = time.perf_counter()
      infer()
      first = time.perf_counter() - t
      t = time.perf_counter()
      infer()
      row = {"model": args.model, "form": form, "first_call_s": round(first, 2),
             "second_call_s": round(time.perf_counter() - t, 2)}
      if form == "tiered":
        row.update(chunk_levels="".join(map(str, fns["run"].used)),
                   level0_compile_s=fns["run"].times["level0_s"],
                   level1_compile_s=fns["run"].times["level1"][1])
      print(json.dumps(row), flush=True)
  # One chunk from the same inputs, compiled at each level: the same bits?
  run = infer.fns["run"].fn
  captured = []
  infer.fns["run"] = lambda *a: captured.append(jax.device_get(a)) or run(*a)
  infer()
  lowered = run.lower(*captured[0])
  outs = [jax.device_get(lowered.compile(compiler_options=options)(*captured[0]))
          for options in (None, models.CHEAP_COMPILE)]
  pairs = list(zip(jax.tree_util.tree_leaves(outs[0]), jax.tree_util.tree_leaves(outs[1])))
  print(json.dumps({"model": args.model, "chunk_bitwise_equal": all(
      np.array_equal(a, b) for a, b in pairs), "max_relative_difference": max(
          float(np.max(np.abs(a.astype(np.float64) - b) / np.maximum(np.abs(a), 1e-30)))
          for a, b in pairs if a.size and a.dtype.kind == "f")}), flush=True)


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before anything is compiled.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags.
  Raises:
    SystemExit: (status 2, one `error:` line) an unknown --what or --model, a count below 1.
  """
  p = ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--what", required=True, choices=("winograd", "bdot", "heads", "infer_parts",
                                                     "term_report", "tiered_chunk"))
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--model", default="discvae", choices=bench.MODELS,
                 help="infer_parts, term_report, tiered_chunk: cvae or discvae.")
  p.add_argument("--xla_cpu_flags", default="recommended", help=bench.XLA_CPU_FLAGS_HELP)
  args = p.parse_args(argv)
  p.check_at_least(args, {"batch": 1, "repeats": 1})
  return args


def main(argv=None) -> None:
  """Measures the forms `--what` names (see the module docstring) and prints JSON lines.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be measured, as one `error:` line.
  """
  args = parse_args(argv)
  print(json.dumps({"xla_flags": bench.set_xla_cpu_flags(args.xla_cpu_flags)}), flush=True)
  globals()[args.what](args)


if __name__ == "__main__":
  main()
