"""Error types. Each carries one plain message that names the problem and the fix; the entry
points print it without a traceback. (Ctrl-C itself: `interrupts`.)"""


class A2IError(ValueError):
  """Base class of the errors a user can fix (bad input, config, data or checkpoint)."""


class ConfigError(A2IError):
  """A config key that does not exist or a value that cannot work."""


class InputError(A2IError):
  """Images or attributes of the wrong shape, length or range."""


class DataError(A2IError):
  """Bad or missing data."""


class DatasetNotPreparedError(DataError):
  """A dataset whose source files are not on this machine yet."""


class CheckpointError(A2IError):
  """A missing, unreadable or incompatible checkpoint."""


class TrainingDivergedError(A2IError):
  """The loss became NaN or infinite."""


class WorkdirError(A2IError):
  """A workdir that cannot be used: a file, not writable, full, or held by another run."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C (SIGINT) stopped training after the state at `step` was saved.

  A KeyboardInterrupt, so that code which stops on Ctrl-C (a notebook cell) still does.
  """

  def __init__(self, step: int):
    super().__init__(f"interrupted at step {step}; run the same command to resume.")
    self.step = step
