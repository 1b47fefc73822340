"""Progress bars that show on a terminal and stay out of logs, pipes and tests."""

from __future__ import annotations

from tqdm import tqdm


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar, drawn only when ``enabled`` and stderr is a terminal (tqdm's ``disable=None``)."""
    return tqdm(iterable, disable=None if enabled else True, dynamic_ncols=True, **kwargs)
