"""The exceptions pyzmq-wiring raises.

Every wiring, directory and libzmq failure is a :class:`Error`.  Failures that
come from libzmq carry its ``errno``; the others carry ``None``.
"""


class Error(Exception):
    """A wiring, directory or libzmq failure.

    ``errno`` is the libzmq/OS error number when libzmq reported the failure,
    otherwise ``None``.
    """

    def __init__(self, message: str, errno: "int | None" = None) -> None:
        super().__init__(message)
        self.errno = errno


class Timeout(Error, TimeoutError):
    """A blocking call ran out of time before it could complete."""
