"""Failures a user can cause with what they drop in the inbox.

An :class:`InputError` message is one sentence a person can act on; the worker records it on
the job and in the log as it is, without a traceback.
"""


class InputError(Exception):
    """The picture cannot become a model (not an image, truncated, too large, nothing in it)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class ResultExistsError(FileExistsError):
    """The result folder's name is taken; results are never overwritten."""
