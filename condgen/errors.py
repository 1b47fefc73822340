"""The one exception type that reaches the user as a single line instead of a traceback."""


class CondgenError(Exception):
    """A problem with the user's input (a file, an entry, an option), reported in one line.

    The message names what is wrong and where, e.g. ``train.json: entry "a.png": unknown object "red sphre"``.
    The CLI prints it to stderr and exits with status 2.
    """


class InterruptedTrainingError(CondgenError):
    """SIGINT or SIGTERM stopped training after a complete step, whose checkpoint was written; ``--resume``
    continues exactly from it. The CLI adds the command that does so and exits with status 130."""

    def __init__(self, step: int, checkpoint: str):
        super().__init__(f"interrupted after step {step}; saved {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


class SharedError(CondgenError):
    """A problem every process of a distributed run meets alike (the same bad state, or rank 0's answer passed to
    the others): raised on every rank so that none waits for the rest, and reported once, by rank 0."""


def require_positive(section: str, **sizes: int | tuple[int, ...]) -> None:
    """Raises for the first of a config section's ``sizes`` (a number, or a tuple of them) that is not positive,
    naming ``section.key``: a layer of -5 channels is the user's mistake, not a crash inside torch."""
    for key, value in sizes.items():
        values = value if isinstance(value, tuple) else (value,)
        if not values or not all(v > 0 for v in values):
            raise CondgenError(f"{section}.{key}: {value!r}; every size must be a positive number")
