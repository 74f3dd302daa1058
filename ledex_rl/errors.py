"""The one base of every failure a user can fix (bad config or input, missing data, model, sandbox or
cluster, an actor that died): the CLI prints its message as one line and exits with code 2, without a
traceback. Light on purpose, so the CLI can catch these without importing torch or Ray."""


class UserError(Exception):
    """A failure whose message names the problem and the fix."""
