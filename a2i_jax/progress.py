"""The library's progress bars (training, data preparation, the mask network): tqdm's, which
update at most every `LOGGED_INTERVAL_S` where standard error is no terminal and no notebook
(a job's log file or pipe). Were ten times a second there: a folder of 3,000 images wrote 42
updates of its preparation bar in 4 s, a 100,000-image folder would have written thousands
(fault hunt); the training bar's own rule, now everyone's.
"""

import sys
from typing import Any, Iterable, Optional

# How often a bar written to a log (no terminal, no notebook) updates.
LOGGED_INTERVAL_S = 30.0
# How often one on a terminal or in a notebook does (tqdm's default).
SHOWN_INTERVAL_S = 0.1


def interactive() -> bool:
  """Whether a person watches standard error as it is written: a terminal, or a Jupyter /
  Colab notebook (whose stream is no terminal, but draws a bar's carriage returns in place).

  Returns:
    True for a terminal or a notebook kernel; False for a file, a pipe, or no stream.
  """
  if sys.stderr is None:
    return False
  try:
    if sys.stderr.isatty():
      return True
  except (AttributeError, ValueError):  # A stream without isatty, or one that is closed.
    return False
  return "ipykernel" in sys.modules


def bar(iterable: Optional[Iterable[Any]] = None, **kwargs: Any) -> Any:
  """A tqdm bar (over `iterable`, or updated by hand) that updates as `interactive` allows.

  Args:
    iterable: what the bar counts, or None for a bar updated with `update`.
    **kwargs: tqdm's (desc, total, unit, disable, ...); a `mininterval` given wins.
  Returns:
    The tqdm bar.
  """
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel  # Only where a bar is shown.
  kwargs.setdefault("mininterval", SHOWN_INTERVAL_S if interactive() else LOGGED_INTERVAL_S)
  return tqdm(iterable, **kwargs)
