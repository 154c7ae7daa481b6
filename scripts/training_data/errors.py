"""The three ways a problem can end: one actor, the whole run, or the command line."""

import errno

EXIT_OK, EXIT_ACTOR_FAILED, EXIT_USAGE = 0, 1, 2  # the documented exit codes

# A full disk or an exhausted quota fails every actor alike, so either one stops the run.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class ActorError(Exception):
    """Fails one actor; the message is recorded in progress.json as its error."""


class FatalRunError(Exception):
    """A fault that would fail every actor alike (rejected key, full disk): stop the run, exit 2."""


class UsageError(Exception):
    """Something the user asked for that cannot be done as asked: one line, exit 2."""


def is_disk_full(error: OSError) -> bool:
    return error.errno in DISK_FULL_ERRNOS


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none), for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
