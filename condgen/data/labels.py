"""The object vocabulary and the multi-hot codec: lists of object names <-> 0/1 vectors."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from condgen.data.jsonio import read_json
from condgen.data.vocabulary import ICLEVR_OBJECTS
from condgen.errors import CondgenError


class LabelCodec:
    """Maps object names to indices and lists of names to multi-hot float vectors.

    The zero vector means "no condition"; a vector with k ones asks for k objects.
    """

    def __init__(self, names: Sequence[str]):
        if len(set(names)) != len(names):
            raise CondgenError("object vocabulary: names must be unique")
        self.names: tuple[str, ...] = tuple(names)
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelCodec) and self.names == other.names

    @classmethod
    def iclevr(cls) -> LabelCodec:
        return cls(ICLEVR_OBJECTS)

    @classmethod
    def from_mapping(cls, mapping: object, where: str) -> LabelCodec:
        """Builds the codec from an ``objects.json`` mapping {name: index}, indices 0..n-1 each once."""
        if not isinstance(mapping, Mapping) or not mapping:
            raise CondgenError(f"{where}: expected a non-empty JSON object {{name: index}}")
        for name, index in mapping.items():
            if not isinstance(index, int) or isinstance(index, bool):
                raise CondgenError(f'{where}: entry "{name}": index must be an integer, got {index!r}')
        by_index: dict[int, str] = {}
        for name, index in mapping.items():
            if index in by_index:
                raise CondgenError(f'{where}: index {index} is used twice ("{by_index[index]}" and "{name}")')
            by_index[index] = name
        outside = [index for index in by_index if not 0 <= index < len(mapping)]
        if outside:  # with no index twice, one outside the range means one inside it is missing
            missing = min(set(range(len(mapping))) - set(by_index))
            raise CondgenError(
                f'{where}: indices must be 0..{len(mapping) - 1}, each used once; "{by_index[outside[0]]}" has '
                f"{outside[0]} and {missing} is missing"
            )
        return cls(sorted(mapping, key=mapping.__getitem__))

    @classmethod
    def from_file(cls, path: str | Path) -> LabelCodec:
        return cls.from_mapping(read_json(path), str(path))

    def to_mapping(self) -> dict[str, int]:
        return dict(self.index)

    def check_names(self, names: object, where: str) -> list[str]:
        """Validates one label list: a non-empty list of distinct known names."""
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise CondgenError(f"{where}: expected a list of object names, got {_short(names)}")
        if not names:
            raise CondgenError(f"{where}: empty label list (at least one object is needed)")
        seen: set[str] = set()
        for name in names:
            if name not in self.index:
                raise CondgenError(f'{where}: unknown object "{name}"{self._suggestion(name)}')
            if name in seen:
                raise CondgenError(f'{where}: object "{name}" appears twice')
            seen.add(name)
        return names

    def encode(self, names: object, where: str = "labels") -> torch.Tensor:
        """One label list -> a float multi-hot vector of length ``len(self)``."""
        vector = torch.zeros(len(self))
        for name in self.check_names(names, where):
            vector[self.index[name]] = 1.0
        return vector

    def encode_many(self, lists: Sequence[object], where: str = "labels") -> torch.Tensor:
        """Label lists -> an (N, C) float multi-hot matrix; ``where`` names the file for errors."""
        if len(lists) == 0:
            return torch.zeros(0, len(self))
        return torch.stack([self.encode(names, f"{where}: entry {i}") for i, names in enumerate(lists)])

    def decode(self, vector: torch.Tensor) -> list[str]:
        """A multi-hot vector -> the names of its non-zero entries, in vocabulary order."""
        return [self.names[i] for i in torch.nonzero(vector > 0.5).flatten().tolist()]

    def parse(self, text: str, where: str = "--objects") -> torch.Tensor:
        """``"red sphere, cyan cube"`` -> a multi-hot vector."""
        names = [part.strip() for part in text.split(",") if part.strip()]
        return self.encode(names, where)

    def _suggestion(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names, n=1, cutoff=0.5)
        return f' (did you mean "{close[0]}"?)' if close else ""


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def share_a_first_word(labels: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
    """Whether each multi-hot row of ``labels`` (N, C) asks for two objects whose ``names`` share their first word:
    in i-CLEVR ("red cube", "red sphere") two objects of one colour, which only their shapes tell apart."""
    words = sorted({name.split()[0] for name in names})
    word_of = torch.tensor([words.index(name.split()[0]) for name in names])
    per_word = labels.float() @ torch.nn.functional.one_hot(word_of, len(words)).float()  # objects asked per word
    return (per_word >= 2).any(dim=1)
