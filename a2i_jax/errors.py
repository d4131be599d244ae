"""Error types. Each carries one plain message that names the problem and the fix; the entry
points print it without a traceback."""


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
