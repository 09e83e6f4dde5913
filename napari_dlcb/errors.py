"""User-facing errors: one clear line, shown as a napari notification or a CLI exit."""

from __future__ import annotations

__all__ = ["DlcbError"]


class DlcbError(ValueError):
    """Bad input or an impossible request, explained in one line.

    The GUI shows ``str(err)`` as a notification; the CLI prints it and exits
    with status 2. Never raise it for programming errors.
    """
