"""The refresh's step bodies."""


class StepSkipped(Exception):
    """A step that has nothing it can do and is not needed for the data: the run records it as
    skipped with its notice as a warning, and goes on (an optional service switched off). The
    message is the one a command that needs the step prints; the notice is the refresh's."""

    def __init__(self, message: str, notice: str | None = None) -> None:
        super().__init__(message)
        self.notice = notice or message
