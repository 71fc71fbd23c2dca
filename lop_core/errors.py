"""Errors every module may raise (kept apart so that no import cycle is needed to raise them)."""


class ConfigError(ValueError):
    """A parameter name, type or value that no run can be made from; raised before anything is written."""
