"""What one request to the page may ask for, checked before any model runs. No torch and no web framework: the
checks are plain Python, and their errors (:class:`CondgenError`) become the server's 400 answers."""

from __future__ import annotations

from dataclasses import dataclass

from condgen.diffusion.options import Sampler
from condgen.errors import CondgenError

FIELDS = ("objects", "sampler", "steps", "guidance", "seed")
MAX_SEED = 2**32 - 1  # torch takes larger seeds, but the page's JavaScript numbers stay exact up to here
MAX_NAME = 60  # characters in one object name; "purple cylinder" has 15
MAX_GUIDANCE = 100.0  # ten times the largest scale any benchmark chose; far beyond it images only saturate


@dataclass(frozen=True)
class Limits:
    """What one request may cost, and how many may run at once."""

    max_steps: int = 100  # sampler steps (network evaluations, twice that with guidance) per image
    max_concurrent: int = 1  # generations running at the same time; others wait for a free slot
    queue_timeout: float = 30.0  # seconds a request waits for a free slot before the server answers 503
    max_body: int = 4096  # bytes of JSON per request; a request is a few dozen


@dataclass(frozen=True)
class Request:
    """One image's worth of work: objects by name, and sampling settings (None = the model's own)."""

    objects: tuple[str, ...]
    seed: int = 0
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None


def parse_request(body: object, limits: Limits) -> Request:
    """The JSON body of a request -> a :class:`Request`; a :class:`CondgenError` names the first field that is
    wrong. Model-specific checks (vocabulary, most objects, a sampler's real step count) come after."""
    if not isinstance(body, dict):
        raise CondgenError(f"the request must be a JSON object with the fields {', '.join(FIELDS)}")
    unknown = [key for key in body if key not in FIELDS]
    if unknown:
        fields = ", ".join(FIELDS)
        raise CondgenError(f"unknown field {_quoted(unknown[0])}: a request takes {fields} (one image per request)")
    return Request(
        objects=_objects(body.get("objects")),
        seed=_whole(body, "seed", 0, MAX_SEED, default=0),
        sampler=_sampler(body.get("sampler")),
        steps=_whole(body, "steps", 1, limits.max_steps, default=None),
        guidance=_guidance(body.get("guidance")),
    )


def _objects(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(name, str) for name in value):
        raise CondgenError('objects: a list of object names is needed, e.g. ["red cube", "blue sphere"]')
    names = tuple(name.strip() for name in value)
    for name in names:
        # the model's refusal quotes the name as it is: keep it one short line of text
        if len(name) > MAX_NAME or not name.isprintable():
            raise CondgenError(
                f'objects: {_shown(name)} is no object name: one line of at most {MAX_NAME} characters, e.g. "red cube"'
            )
    return names


def _whole(body: dict, key: str, low: int, high: int, default: int | None) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    # JSON has one number type: 20.0 is taken as 20, 2.5 and true are not whole numbers
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise CondgenError(f"{key}: a whole number from {low} to {high}, got {_shown(value)}")
    return value


def _sampler(value: object) -> str | None:
    names = [sampler.value for sampler in Sampler]
    if value is None or value in names:
        return value
    raise CondgenError(f"sampler: unknown sampler {_shown(value)}; choose {', '.join(names[:-1])} or {names[-1]}")


def _guidance(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_GUIDANCE:
        raise CondgenError(
            f"guidance: a number from 0 to {MAX_GUIDANCE:g} (1 = none, 0 = unconditional), got {_shown(value)}"
        )
    return float(value)


def _quoted(text: str) -> str:
    """``text`` in double quotes when it prints as itself in one short line, else as :func:`_shown` writes it."""
    return f'"{text}"' if len(text) <= 40 and text.isprintable() else _shown(text)


def _shown(value: object) -> str:
    """``value`` as an error message quotes it: its repr, cut short (a request may hold a number of 4,000 digits)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"a number of {len(str(value))} digits"
    return text if len(text) <= 40 else text[:37] + "..."
