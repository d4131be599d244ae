"""Logs JAX's compiler and cache lines of every Python process that starts with this folder on
PYTHONPATH and A2I_JAXLOG_DIR set: the test suite's workers and every train.py, infer.py,
driver and notebook kernel they start. One file per process, `<pid>.log`, in A2I_JAXLOG_DIR.

  A2I_JAXLOG_DIR=/tmp/log PYTHONPATH=$PWD/benchmarks/compile_log python -m pytest -n 2 -q
  python benchmarks/compile_log_summary.py /tmp/log

The loggers are set to DEBUG with a file handler of their own (not propagated), so nothing
reaches the console. What they log is JAX's: each program's tracing, lowering and XLA
compilation time, and each persistent-cache hit, miss and write with its key. The first line
names the process's parent ("# ppid N"), so that the summary can attribute a subprocess's
work to the test that started it.
"""

import logging
import os

_DIR = os.environ.get("A2I_JAXLOG_DIR")
if _DIR:
  os.makedirs(_DIR, exist_ok=True)
  _PATH = os.path.join(_DIR, f"{os.getpid()}.log")
  with open(_PATH, "a", encoding="utf-8") as _f:  # Who started it: for --timeline's attribution.
    _f.write(f"# ppid {os.getppid()}\n")
  _HANDLER = logging.FileHandler(_PATH)
  _HANDLER.setFormatter(logging.Formatter("%(created).3f %(name)s %(message)s"))
  for _name in ("jax._src.compiler", "jax._src.compilation_cache", "jax._src.dispatch",
                "jax._src.cache_key"):
    _logger = logging.getLogger(_name)
    _logger.setLevel(logging.DEBUG)
    _logger.addHandler(_HANDLER)
    _logger.propagate = False
