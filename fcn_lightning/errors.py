"""User-facing errors: each carries one line that names the file or config key and what to do.

Entry points catch `FCNError`, print its message and exit non-zero, so users never see a
traceback for a mistake they can fix.
"""


class FCNError(Exception):
    """A problem the user can fix; its message is shown as is."""


class ConfigError(FCNError, ValueError):
    """An impossible or unknown configuration value."""


class WeightsError(FCNError):
    """Pretrained weights or checkpoints that are missing, unreadable or do not fit."""


class DataError(FCNError):
    """A dataset that is missing, incomplete or malformed."""


class DownloadError(FCNError):
    """A download that could not be completed (no network, bad checksum, ...)."""


class DivergedError(FCNError):
    """Training produced a NaN or infinite loss."""
