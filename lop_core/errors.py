"""Errors every module may raise (kept apart so that no import cycle is needed to raise them)."""


class ConfigError(ValueError):
    """A parameter name, type or value that no run can be made from; raised before anything is written."""


class RunError(RuntimeError):
    """A run folder or checkpoint that is missing, incomplete or corrupt."""


class RunLocked(RunError):
    """A run that another process is training."""
