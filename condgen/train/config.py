"""Configs: dataclass defaults, overridden by a YAML file, overridden by ``key=value`` pairs from the command line.

Every default lives in the dataclass; a YAML file holds only what it changes. Unknown keys and values of the wrong
type are rejected with the file (or option) and key named.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from condgen.errors import CondgenError

T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Builds ``cls`` from its defaults, then ``path`` (YAML), then ``overrides`` like ``["train.lr=2e-4"]``."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CondgenError(f"{path}: config file not found") from None
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise CondgenError(f"{path}: cannot read YAML ({str(exc).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise CondgenError(f"{path}: expected a mapping of config keys")
        values = loaded or {}
    given: dict[tuple[str, ...], str] = {}  # key path -> the override that set it, which errors then name
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise CondgenError(f"override {item!r}: expected key=value")
        node = values
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CondgenError(f"override {item!r}: {part} is not a section")
        try:
            node[leaf] = yaml.safe_load(text)
        except yaml.YAMLError as exc:  # a YAML tag (!!python/...) or broken syntax, never constructed
            raise CondgenError(f"override {item!r}: not a YAML value ({str(exc).splitlines()[0]})") from None
        given[(*parents, leaf)] = f"override {item!r}"
    try:
        return _build(cls, values, str(path) if path else "config", given=given)
    except CondgenError as exc:  # a section's own check (a size that is not positive, say) names the key alone
        if path is None or given or str(exc).startswith(str(path)):
            raise
        raise CondgenError(f"{path}: {exc}") from None


def _build(
    cls: type[T],
    values: dict[str, Any],
    where: str,
    base: T | None = None,
    given: dict[tuple[str, ...], str] | None = None,
    path: tuple[str, ...] = (),
) -> T:
    """``values`` over ``base`` (``cls()`` when None). A section starts from its parent's default for it, so a file
    that sets one key of a section keeps the parent's other choices (``field(default_factory=...)``). An error about
    a key that a command-line override set (``given``, by key path) names that override, not the file."""
    base = cls() if base is None else base
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        source = (given or {}).get((*path, key))
        if key not in fields:
            raise CondgenError(f"{source or where}: unknown key {key!r} (known: {', '.join(fields)})")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise CondgenError(f"{source or where}: {key}: expected a section (mapping)")
            kwargs[key] = _build(hints[key], value, f"{where}: {key}", getattr(base, key), given, (*path, key))
        else:
            kwargs[key] = _coerce(hints[key], value, source or f"{where}: {key}")
    return dataclasses.replace(base, **kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise CondgenError(f"{where}: expected a list, got {value!r}")
        item_type = typing.get_args(hint)[0]
        return tuple(_coerce(item_type, v, where) for v in value)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(typing.get_args(hint), value, where)
    if origin is typing.Literal:
        if any(type(value) is type(allowed) and value == allowed for allowed in typing.get_args(hint)):
            return value
        raise CondgenError(f"{where}: expected {_expected(hint)}, got {value!r}")
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, str, bool) and type(value) is hint:
        return value
    if isinstance(hint, type) and issubclass(hint, str):  # str enums take their value
        try:
            return hint(value)
        except ValueError:
            raise CondgenError(f"{where}: {value!r} is not one of {[m.value for m in hint]}") from None
    raise CondgenError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _coerce_union(options: tuple[Any, ...], value: Any, where: str) -> Any:
    """``value`` as the first of a union's ``options`` that takes it (``bool | Literal["auto"]``: true, false or
    auto); None where the union allows it."""
    if value is None and type(None) in options:
        return None
    options = tuple(option for option in options if option is not type(None))
    if len(options) == 1:
        return _coerce(options[0], value, where)
    for option in options:
        try:
            return _coerce(option, value, where)
        except CondgenError:
            continue
    raise CondgenError(f"{where}: expected {_expected(*options)}, got {value!r}")


def _expected(*hints: Any) -> str:
    """What ``hints`` take, for an error: "true, false or auto"."""
    words = []
    for hint in hints:
        if hint is bool:
            words += ["true", "false"]
        elif typing.get_origin(hint) is typing.Literal:
            words += [str(value) for value in typing.get_args(hint)]
        else:
            words.append(getattr(hint, "__name__", str(hint)))
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def config_to_dict(config: Any) -> dict:
    """A dataclass config as plain YAML-friendly values (enums as their strings, tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, str):
            return str(value.value) if hasattr(value, "value") else value
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def dump_config(config: Any) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
