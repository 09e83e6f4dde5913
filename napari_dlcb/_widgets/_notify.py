"""One-line notifications of the docks (napari toasts; the status line keeps the full text)."""

from __future__ import annotations

import logging
import re

from napari.utils.notifications import show_error, show_info, show_warning

from napari_dlcb.errors import DlcbError

__all__ = ["notify_error", "notify_info", "notify_warning"]

logger = logging.getLogger(__name__)


def _one_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else ""


def _toast(text: str) -> str:
    """The toast's text: quoted folders shortened to their last part.

    A toast shows only its first wrapped line until expanded, so a long path
    would push the message out of view; the status line keeps the full text.

    >>> _toast("cannot use '/data/runs/nuclei_2d' as a base model")
    "cannot use '…/nuclei_2d' as a base model"
    """
    return re.sub(r"'/(?:[^'/]+/)+([^'/]+)/?'", r"'…/\1'", text)


def notify_error(err: BaseException | str) -> str:
    """Show ``err`` as a one-line napari error notification and return the message.

    A :class:`~napari_dlcb.errors.DlcbError` is a user error: its message is shown
    as it is. Any other exception is a bug or an environment problem: the full
    traceback goes to the log and the notification names the exception type.
    """
    if isinstance(err, str):
        message = _one_line(err)
    elif isinstance(err, DlcbError):
        message = _one_line(str(err)) or type(err).__name__
    else:
        logger.error("napari-dlcb: unexpected error", exc_info=err)
        detail = _one_line(str(err))
        message = f"{type(err).__name__}: {detail}" if detail else type(err).__name__
    show_error(_toast(message))
    return message


def notify_info(message: str) -> None:
    """Show a one-line info notification."""
    show_info(_toast(_one_line(message)))


def notify_warning(message: str) -> None:
    """Show a one-line warning notification."""
    show_warning(_toast(_one_line(message)))
