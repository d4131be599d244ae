"""Initial variables in a new process: `models.init_variables` of the paper models, with the
persistent compilation cache warm (a second start) and off (a first start); prints JSON lines.

  python benchmarks/init_time.py                                  # this checkout
  python benchmarks/init_time.py --roots=.,/tmp/old --rounds=3    # two checkouts, alternated

Each (root, cache, round) runs in a fresh CPU process (JAX_PLATFORMS=cpu) that imports
`a2i_jax` from that root, starts JAX's backend (one tiny jitted call, untimed), and times two
calls per model: the first for that model in the process, and a second one (a new jitted
function, same process). "warm" turns the cache on as train.py does
(`files.enable_compilation_cache`, in a folder that a discarded run of the same root filled
first); "off" turns it off. Each row names the root's commit and the jax version. Comparing
roots side by side (`--roots`) is how BENCHMARKS.md compares a change with the code before it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import timing  # noqa: E402  (this checkout's benchmarks/timing.py, before any root's path)


def _child(args: argparse.Namespace) -> None:
  # The root's bench.py imports that root's timing.py, not the one this script's parse loaded.
  sys.modules.pop("timing", None)
  sys.path[:0] = [args.root, os.path.join(args.root, "benchmarks")]  # That root's bench.py too.
  import jax  # pylint: disable=import-outside-toplevel
  from a2i_jax import files  # pylint: disable=import-outside-toplevel
  if args.cache_dir:
    files.enable_compilation_cache(args.cache_dir)  # As train.py and infer.py do.
  else:
    timing.compilation_cache_off()  # This checkout's timing.py (imported before the root's).
  jax.block_until_ready(jax.jit(lambda x: x + 1)(1.0))  # The backend's start-up, untimed.
  import bench  # pylint: disable=import-outside-toplevel
  from a2i_jax import models  # pylint: disable=import-outside-toplevel
  assert models.__file__.startswith(args.root + os.sep), (models.__file__, args.root)
  commit = subprocess.run(["git", "-C", args.root, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip()
  out = {"commit": commit or "?", "jax": jax.__version__}
  for name in args.models.split(","):
    cfg = bench.make_config(bench.Case(name, 32, "float32"), {})
    model = models.create_model(cfg.model)
    for call in ("first", "second"):
      t0 = time.perf_counter()
      jax.block_until_ready(models.init_variables(model, cfg.model, jax.random.key(0)))
      out[f"{name}_{call}_s"] = round(time.perf_counter() - t0, 3)
  print(json.dumps(out))


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before any process is started.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags; `roots` as a list of absolute paths (`models` a comma list, as the children
    take it).
  Raises:
    SystemExit: (status 2, one `error:` line) an unknown model, a root that is no checkout of
      a2i-jax, a count below 1.
  """
  p = timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="cvae,discvae", help="Comma list: cvae, discvae, vae.")
  p.add_argument("--roots", default=os.path.dirname(HERE),
                 help="Comma list of checkouts to import a2i_jax from.")
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--root", help=argparse.SUPPRESS)
  p.add_argument("--cache_dir", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:  # Flags the parent checked. Not bench.py here: it imports this checkout's
    return args  # a2i_jax, and the child measures the root's.
  import bench  # pylint: disable=import-outside-toplevel  # This checkout's: its model names.
  p.check_at_least(args, {"rounds": 1})
  args.models = ",".join(p.comma_list("--models", args.models, bench.MODELS))
  args.roots = [os.path.abspath(r) for r in p.comma_list("--roots", args.roots)]
  for root in args.roots:  # Was: a child's traceback (CalledProcessError) after others ran.
    if not os.path.isdir(os.path.join(root, "a2i_jax")):
      p.error(f"--roots: {root} is not a checkout of a2i-jax (no a2i_jax/ in it); give "
              "checkouts' folders.")
  return args


def main(argv=None) -> None:
  """Times the models' initial variables in fresh processes (see the module docstring).

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be measured, as one `error:` line.
  """
  args = parse_args(argv)
  if args.child:
    _child(args)
    return
  roots = args.roots
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    caches = {r: os.path.join(tmp, f"cache{i}") for i, r in enumerate(roots)}

    def run(root: str, cache: str) -> dict:
      cmd = [sys.executable, os.path.abspath(__file__), "--child", f"--root={root}",
             f"--models={args.models}", f"--cache_dir={cache}"]
      r = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
      return json.loads(r.stdout.strip().splitlines()[-1])

    for root in roots:
      run(root, caches[root])  # Fills the root's cache; discarded.
    for i in range(args.rounds):
      for root in roots:
        for cache in ("warm", "off"):
          row = run(root, caches[root] if cache == "warm" else "")
          row.update(root=root, cache=cache, round=i)
          print(json.dumps(row), flush=True)
          results.setdefault((root, cache), []).append(row)
  for (root, cache), rows in results.items():
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.endswith("_s")}
    print(f"{root} ({rows[0]['commit']}) cache={cache}: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))


if __name__ == "__main__":
  main()
