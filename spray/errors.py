"""Error types that say what went wrong, where, and how to fix it.

Every error a user can cause derives from :class:`SprayError`, so the CLI can map it to a clean
message and a distinct exit code instead of a traceback.
"""


class SprayError(Exception):
    """Base class of all errors caused by input, configuration or an unsupported model."""


class ConfigError(SprayError, ValueError):
    """A configuration value or an argument is wrong; the message names it and the fix."""


class InputError(SprayError, ValueError):
    """Input data (a tensor, a sample, a file) is unusable; the message names which one."""


class UnsupportedModelError(SprayError, TypeError):
    """The model contains a layer or an operation that spray cannot explain faithfully."""
