"""Progress of long work: a tqdm bar on a terminal; on any other stderr (a log file, a pipe, a job's captured output)
a plain line now and then, so that work of minutes says how far it is while work of seconds says nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

# when stderr is no terminal: no plain line before this many seconds since the last (or the start), and then one
# as soon as the work is a tenth further, or anyway once this long has passed
LINE_EVERY_S = 30.0
LINE_STEP = 0.1
LINE_AT_MOST_EVERY_S = 300.0


def progress_bar(
    iterable: Iterable | None = None,
    *,
    enabled: bool = True,
    file: IO[str] | None = None,
    seconds_limit: float = 0.0,
    **kwargs: Any,
) -> tqdm | PlainProgress:
    """Progress on ``file`` (stderr by default) when ``enabled``: a tqdm bar where it is a terminal, else
    :class:`PlainProgress` lines. ``seconds_limit`` is a wall-clock budget that may end the work before ``total``
    (a training's ``loop.max_minutes``): the time left counts down to it. ``kwargs`` are tqdm's (total, initial,
    desc, unit)."""
    stream = sys.stderr if file is None else file
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if _is_terminal(stream):
        return tqdm(iterable, file=stream, dynamic_ncols=True, **kwargs)
    return PlainProgress(iterable, file=stream, seconds_limit=seconds_limit, **kwargs)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PlainProgress:
    """The part of tqdm's interface that condgen uses (``update``, ``set_postfix``, iteration, a ``with`` block),
    for a stream that is no terminal: a line such as ``condgen: encoding: 2,048/10,000 img, 1:05 elapsed, about
    4:20 left`` at most every ``LINE_EVERY_S`` seconds, when the work is ``LINE_STEP`` further or
    ``LINE_AT_MOST_EVERY_S`` have passed, and a last one (done or stopped) when any was written. ``clock`` is for
    tests."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        file: IO[str],
        total: int | None = None,
        initial: int = 0,
        desc: str = "",
        unit: str = "it",
        seconds_limit: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        **terminal_options: Any,  # tqdm's drawing options (leave, ncols, ...) have nothing to draw here
    ):
        self.iterable, self.file, self.desc, self.unit = iterable, file, desc, unit
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.initial = total, initial, initial
        self.seconds_limit, self.clock = seconds_limit, clock
        self.started = self.last_line = clock()
        self.last_fraction = self.fraction()
        self.postfix = ""
        self.lines, self.closed = 0, False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        since = now - self.last_line
        further = self.fraction() - self.last_fraction >= LINE_STEP
        if since >= LINE_EVERY_S and (further or since >= LINE_AT_MOST_EVERY_S):
            self._line(now)

    def set_postfix(self, values: dict[str, object] | None = None, **more: object) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in {**(values or {}), **more}.items())

    def close(self) -> None:
        """A last line when the work said anything before, so that a log shows where it ended; once."""
        if self.lines and not self.closed:
            self._line(self.clock(), end="done" if self.total and self.n >= self.total else "stopped")
        self.closed = True

    def fraction(self) -> float:
        """How far the work is, 0 to 1: by its count, or by its wall-clock budget where that is further."""
        by_count = self.n / self.total if self.total else 0.0
        by_clock = (self.clock() - self.started) / self.seconds_limit if self.seconds_limit > 0 else 0.0
        return min(1.0, max(by_count, by_clock))

    def seconds_left(self) -> float | None:
        """The time the rest will take at this invocation's pace, at most what is left of the budget; None before
        anything is done or without a total or budget."""
        elapsed = self.clock() - self.started
        by_count = None
        if self.total and self.n > self.initial:
            by_count = elapsed / (self.n - self.initial) * max(0, self.total - self.n)
        if self.seconds_limit > 0:
            by_clock = max(0.0, self.seconds_limit - elapsed)
            return by_clock if by_count is None else min(by_count, by_clock)
        return by_count

    def _line(self, now: float, end: str = "") -> None:
        count = f"{self.n:,}/{self.total:,}" if self.total else f"{self.n:,}"
        words = [f"{count} {self.unit}", f"{_clock(now - self.started)} elapsed"]
        left = self.seconds_left()
        if not end and left is not None:
            words.append(f"about {_clock(left)} left")
        if self.postfix:
            words.append(self.postfix)
        name = f"{self.desc}: " if self.desc else ""
        print(f"condgen: {name}{', '.join(words)}{f'; {end}' if end else ''}", file=self.file, flush=True)
        self.last_line, self.last_fraction = now, self.fraction()
        self.lines += 1


def _clock(seconds: float) -> str:
    """1:05, 12:00, 1:02:03."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
