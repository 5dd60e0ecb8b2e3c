"""The refresh's step bodies."""


class StepSkipped(Exception):
    """A step that has nothing it can do and is not needed for the data: the run records it as
    skipped with this message as a warning, and goes on (an optional service switched off)."""
