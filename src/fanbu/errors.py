"""Errors that say what went wrong and what to do about it.

Every error fanbu raises on bad input derives from :class:`FanbuError`; the CLI prints its message
without a traceback. Messages name the file, line or field at fault and the setting to change.
"""


class FanbuError(Exception):
    """Base class: a user-facing error whose message says what to do."""


class ConfigError(FanbuError):
    """A recipe or override is invalid (unknown key, wrong type, bad value)."""


class DomainError(FanbuError):
    """A domain's data is missing, malformed or empty."""


class ModelError(FanbuError):
    """A model cannot be found, loaded or saved (missing files, corrupt weights)."""


class RegistryError(FanbuError):
    """The lineage registry refused an operation (unknown id, cycle, conflict)."""


class CheckpointError(FanbuError):
    """A training checkpoint is missing, corrupt or does not match the run."""
