"""Checkpoint saves on CPU: a train state replicated over several CPU devices, saved as it is
(Orbax splits every replicated array among the replicas) and from one device
(`checkpoints._on_one_device`, the library's way), alternated; prints JSON lines.

  python benchmarks/checkpoint_save.py      # synthetic disCVAE at the tests' width 1/8, 4 devices
  python benchmarks/checkpoint_save.py --first=one_device --model=cvae --devices=2

Each line: the variant, the seconds `Checkpointer.save` blocked for (the hand-over to Orbax,
which copies to host) and the seconds to the end of the write (`wait`), per save.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402  (benchmarks/timing.py)


def parse_args(argv=None) -> argparse.Namespace:
  """The command line of `main`, checked before jax is imported.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Returns:
    The flags.
  Raises:
    SystemExit: (status 2, one `error:` line) a count below 1 (was, for --devices=0: a
      RuntimeError from JAX).
  """
  p = timing.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="discvae", choices=("vae", "cvae", "discvae"))
  p.add_argument("--devices", type=int, default=4, help="Fake CPU devices.")
  p.add_argument("--saves", type=int, default=5, help="Saves per variant and round.")
  p.add_argument("--rounds", type=int, default=2, help="Rounds; they alternate which "
                 "variant goes first.")
  p.add_argument("--first", default="replicated", choices=("replicated", "one_device"),
                 help="The variant of the first round's first save (a fresh process's).")
  args = p.parse_args(argv)
  p.check_at_least(args, {"devices": 1, "saves": 1, "rounds": 1})
  return args


def main(argv=None) -> None:
  """Times the saves (see the module docstring); prints JSON lines.

  Args:
    argv: the arguments (default: sys.argv[1:]).
  Raises:
    SystemExit: a flag value that cannot be measured, as one `error:` line.
  """
  args = parse_args(argv)
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + f" --xla_force_host_platform_device_count={args.devices}")
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax  # pylint: disable=import-outside-toplevel
  # pylint: disable=import-outside-toplevel
  from a2i_jax import checkpoints, config_lib, models, parallel, train_state
  config = config_lib.get_config(f"synthetic:{args.model}")
  config.model.width = 0.125  # The width of tests/conftest.py's tiny_config.
  model = models.create_model(config.model)
  state = train_state.create_train_state(model, config, train_state.make_optimizer(config),
                                         jax.random.key(0))
  state = parallel.put_replicated(state, parallel.make_mesh())
  one_device = checkpoints._on_one_device  # pylint: disable=protected-access
  order = ["replicated", "one_device"]
  if args.first == "one_device":
    order.reverse()
  for _ in range(args.rounds):
    for variant in order:
      hand_over = one_device if variant == "one_device" else (lambda s: s)
      checkpoints._on_one_device = hand_over  # pylint: disable=protected-access
      folder = tempfile.mkdtemp()
      ckpt = checkpoints.Checkpointer(folder)
      blocked, total = [], []
      for step in range(1, args.saves + 1):
        t0 = time.perf_counter()
        ckpt.save(step, state)
        blocked.append(round(time.perf_counter() - t0, 3))
        ckpt.wait()
        total.append(round(time.perf_counter() - t0, 3))
      ckpt.close()
      shutil.rmtree(folder)
      checkpoints._on_one_device = one_device  # pylint: disable=protected-access
      print(json.dumps({"variant": variant, "model": args.model, "devices": args.devices,
                        "arrays": len(jax.tree_util.tree_leaves(state)),
                        "save_blocked_s": blocked, "save_and_write_s": total}), flush=True)
    order.reverse()  # The other variant first in the next round.


if __name__ == "__main__":
  main()
