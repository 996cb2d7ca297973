"""Every failure memzip reports to a user is a MemzipError: one line, no traceback."""


class MemzipError(Exception):
    """Base class: the CLI prints the message and exits non-zero."""


class ContainerError(MemzipError):
    """The .mz file is malformed, truncated, corrupted or of an unknown version."""


class ModelMismatchError(MemzipError):
    """The model at hand is not the one the file was compressed with."""


class ModelLoadError(MemzipError):
    """The requested model could not be found or loaded."""


class IntegrityError(MemzipError):
    """Decoded output does not match the recorded checksum: nothing is written."""


class SettingsError(MemzipError, ValueError):
    """Compression settings that cannot work (e.g. with this model)."""


class RangeError(MemzipError, ValueError):
    """A byte range to restore that is not within the original file."""
