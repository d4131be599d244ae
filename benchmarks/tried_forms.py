"""Forms of the CPU hot spots that were measured and not adopted (BENCHMARKS.md, "3x3
upsampling layers at the low resolution", "Tried here and not changed"); prints JSON lines.

  python benchmarks/tried_forms.py --what=winograd   # F(2x2, 3x3) against the convolution
  python benchmarks/tried_forms.py --what=bdot       # Winograd's 16 products, five ways
  python benchmarks/tried_forms.py --what=heads      # 5x5 few-output heads, several ways
  python benchmarks/tried_forms.py --what=infer_parts --model=discvae   # init / run / finish

Kept so that the figures can be measured again on another machine: where one of these wins
there, it is the place to start. `infer_parts` times the three programs of one
`infer_latents` call (32 images, 10 steps) with `init` and `finish` compiled with
`models.CHEAP_COMPILE` (the library's choice) and without it.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timing import median_time  # noqa: E402  (benchmarks/timing.py)

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
  import bench  # pylint: disable=import-outside-toplevel
  from a2i_jax import inference  # pylint: disable=import-outside-toplevel
  from a2i_jax.inference import posterior  # pylint: disable=import-outside-toplevel
  config = bench.make_config(bench.Case(args.model, args.batch, "float32"), {})
  infer = bench.inference_call(config, args.batch, steps=10)
  saved = posterior.CHEAP_COMPILE
  try:
    for variant in ("cheap", "optimised", "cheap", "optimised"):
      posterior.CHEAP_COMPILE = saved if variant == "cheap" else {}
      fns = infer.fns = dict(inference.make_inference_fns(infer.model, infer.options))
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


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--what", required=True, choices=("winograd", "bdot", "heads", "infer_parts"))
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--model", default="discvae", help="infer_parts: cvae or discvae.")
  args = p.parse_args()
  globals()[args.what](args)


if __name__ == "__main__":
  main()
