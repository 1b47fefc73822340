"""Fuzzing ``POST /api/generate``: a few hundred seeded mutations of good requests (wrong types, missing and extra
fields, huge, negative and non-finite numbers, long and unicode strings, nesting, bad object lists, bodies that are
not JSON, wrong content types), structured ones for every field and random mixtures of them. Whatever comes, the
server answers 200 or a 4xx whose one-line message names what is wrong: never a 500, never a traceback, nothing
logged and nothing written anywhere. The models are tiny runs trained once for the module."""

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from condgen.data.labels import LabelCodec
from condgen.evaluate.evaluator import load_evaluator

pytest.importorskip("fastapi", reason="condgen serve needs the web extra (pip install 'condgen[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

from condgen.serve.app import create_app  # noqa: E402
from condgen.serve.models import load_models  # noqa: E402
from condgen.serve.requests import FIELDS, Limits  # noqa: E402

LIMITS = Limits(max_steps=4, queue_timeout=5.0)
NAMES = LabelCodec.iclevr().names
DIFFUSION_ONLY = ("sampler", "steps", "guidance")
NAN, INF = float("nan"), float("inf")
LONG = "x" * 3000  # within the 4096-byte body, far past any name

# Values each field must refuse, whatever the model: wrong types, out of range, non-finite, odd text.
INVALID = {
    "objects": [
        "red cube", [], [1], [None], [["red cube"]], {"red cube": 1}, ["red cube", "red cube"], ["pink cube"],
        ["Red Cube"], ["red  cube"], ["red cub"], ["red cube", "blue cube", "green cube", "gray cube"], [""],
        ["红色 立方体"], ["r\u0435d cube"], ["red\ncube"], ["red\u0000cube"], ["\u202ered cube"], ["\ud800"], [LONG],
        [[[[[[[[["red cube"]]]]]]]]], True, 7, None,
    ],
    "seed": [-1, 2**32, 2**64, -(2**63), 1.5, "3", True, NAN, INF, -INF, 1e308, [], {}, [3], "\ud800"],
    "sampler": ["euler", "", "DDIM", " ddim", 1, True, [], {"name": "ddim"}, "ddpm", LONG, "\ud800", ["ddim"]],
    "steps": [0, -1, 5, 2.5, "3", True, False, NAN, INF, -INF, 1e308, -1e308, 10**400, [], {}, [2]],
    "guidance": [-1, -1e-9, 100.5, NAN, INF, -INF, "2", True, [], {}, 1e308, -1e308, 10**400, [2.0]],
}  # fmt: skip
# Anything at all, valid or not for a given field.
ANYTHING = [
    None, True, False, 0, 1, 3, -7, 2**31, 2**53 + 1, 0.5, -0.0, 3.0, 1e-300, NAN, INF, "", "a", "ddim", "dpmpp",
    "red cube", "\u00e9", "\U0001f9ca", "\ud800", "\u0000", LONG, [], ["red cube"], ["blue sphere", "red cube"],
    [None], {}, {"objects": ["red cube"]}, [[[]]],
]  # fmt: skip
EXTRA_KEYS = ["n", "", "Objects", "objects ", "__proto__", "constructor", "红", "\ud800", "\u0000", "x" * 200, "seed\n"]
NOT_JSON = [
    b"", b" ", b"{", b"}", b"{objects: []}", b"{'objects': ['red cube']}", b'{"objects": ["red cube"],}',
    b'{"objects": ["red cube"]} // one', b"\xff\xfe\x00", b"\x80abc", b'{"objects": ["red \xff cube"]}', b"nul",
    b'{"objects": ["red cube"]}{}', b'{"objects": ["red cube"]', b"\x00" * 8,
]  # fmt: skip
NOT_OBJECTS = [b"[]", b'["red cube"]', b'"red cube"', b"1", b"null", b"true", b"NaN", b"-Infinity", b"[{}]"]
BAD_TYPES = [
    None, "", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/jsonx", "application/json-patch+json", "json", "text/json", "application/xml", "*/*",
]  # fmt: skip
GOOD_TYPES = ["application/json", "APPLICATION/JSON", "application/json; charset=utf-8", " application/json "]


@dataclass
class Case:
    """One request: its body (and the JSON object it encodes, if any), its Content-Type (None: none sent), the
    words a refusal must name (one of them), and whether it must be refused."""

    what: str
    body: bytes
    names: tuple[str, ...]
    refused: bool
    content_type: str | None = "application/json"
    request: dict | None = None

    def for_gans(self) -> "Case":
        """This case sent to GANs alone, which refuse any diffusion setting, naming it."""
        given = tuple(f for f in DIFFUSION_ONLY if self.request is not None and self.request.get(f) is not None)
        return Case(self.what, self.body, self.names + given, self.refused or bool(given), self.content_type)


def encoded(request: object, rng: random.Random) -> bytes:
    """``request`` as JSON, non-ASCII escaped or not (a lone surrogate then takes bytes that are not UTF-8)."""
    if rng.random() < 0.5:
        return json.dumps(request).encode()
    return json.dumps(request, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


def good_request(rng: random.Random) -> dict:
    """A request both models serve within ``LIMITS``: 1 to 3 distinct objects, maybe sampling settings."""
    request: dict = {"objects": rng.sample(NAMES, rng.randint(1, 3))}
    if rng.random() < 0.5:
        request["seed"] = rng.randint(0, 2**32 - 1)
    if rng.random() < 0.5:  # a sampler other than the model's own needs steps within LIMITS (ddim's preset is 50)
        request |= {"sampler": rng.choice(["ddim", "dpmpp"]), "steps": rng.randint(1, LIMITS.max_steps)}
    elif rng.random() < 0.5:
        request["steps"] = rng.randint(1, LIMITS.max_steps)
    if rng.random() < 0.5:
        request["guidance"] = rng.choice([0, 1, 2.5, 7, 100])
    return request


def mutated(request: dict, rng: random.Random) -> tuple[str, str, tuple[str, ...], bool]:
    """Changes ``request`` in place by one random mutation: what it did, the key it changed, the words a refusal
    may name and whether that key alone now makes certain the request is refused."""
    field = rng.choice(FIELDS)
    kind = rng.choice(["invalid", "anything", "missing", "extra", "objects"])
    if kind == "invalid":
        request[field] = rng.choice(INVALID[field])
        return f"{field}={request[field]!r:.60}", field, (field,), True
    if kind == "anything":
        request[field] = rng.choice(ANYTHING)
        return f"{field}={request[field]!r:.60}", field, (field,), False
    if kind == "missing":
        request.pop(field, None)
        return f"no {field}", field, (field,), field == "objects"
    if kind == "extra":
        key = rng.choice(EXTRA_KEYS)
        request[key] = rng.choice(ANYTHING)
        return f"extra {key!r:.60}", key, ("unknown field",), True
    objects = request.get("objects")
    names = objects if isinstance(objects, list) and all(isinstance(n, str) for n in objects) else ["red cube"]
    change = rng.choice(["duplicate", "empty", "padded", "many"])
    request["objects"] = {
        "duplicate": names + names[:1],
        "empty": [],
        "padded": [f"  {name}\t" for name in names],  # blanks around a name are forgiven
        "many": rng.sample(NAMES, rng.randint(4, 24)),
    }[change]
    return f"objects {change}", "objects", ("objects",), change != "padded"


def structured_cases(rng: random.Random) -> list[Case]:
    """Every refused value of every field in a good request, every extra key, every body that is no JSON object
    and every wrong Content-Type."""
    cases = []
    for field, values in INVALID.items():
        for value in values:
            request = good_request(rng) | {field: value}
            cases.append(Case(f"{field}={value!r:.60}", encoded(request, rng), (field,), True, request=request))
    for key in EXTRA_KEYS:
        request = good_request(rng) | {key: rng.choice(ANYTHING)}
        cases.append(Case(f"extra {key!r:.60}", encoded(request, rng), ("unknown field",), True, request=request))
    cases += [Case(f"not JSON {body!r:.40}", body, ("request body",), True) for body in NOT_JSON]
    cases += [Case(f"not an object {body!r}", body, ("request must be a JSON object",), True) for body in NOT_OBJECTS]
    nested = b'{"objects": ' + b"[" * 2000 + b"]" * 2000 + b"}"  # within a field, past the parser's depth
    cases.append(Case("nested deep", nested, ("request body nests too deep",), True))
    twice = b'{"objects": ["red cube"], "objects": "red cube"}'  # the last of a repeated key counts
    cases.append(Case("a key twice", twice, ("objects",), True))
    huge = json.dumps({"objects": ["red cube"] * 500}).encode()
    cases.append(Case("over max_body", huge, ("request is over 4096 bytes",), True))
    for content_type in BAD_TYPES:
        request = good_request(rng)
        cases.append(
            Case(f"Content-Type {content_type!r}", encoded(request, rng), ("Content-Type",), True, content_type)
        )
    return cases


def random_cases(rng: random.Random, n: int) -> list[Case]:
    """``n`` good requests changed by one to three random mutations, a few of them sent as UTF-16 or with another
    way of writing application/json; some stay good."""
    cases = []
    for _ in range(n):
        request, what, names, certain = good_request(rng), [], (), {}
        for _ in range(rng.choice([1, 1, 2, 3])):
            did, key, named, certain[key] = mutated(request, rng)  # a later change of a key undoes an earlier one
            what, names = what + [did], names + named
        body = encoded(request, rng)
        if rng.random() < 0.05:  # JSON may come in UTF-16, which json.loads reads
            body = json.dumps(request).encode("utf-16")
        names += ("request",) if len(body) > LIMITS.max_body else ()  # a long value passes the byte limit first
        case = Case(", ".join(what), body, names, any(certain.values()), rng.choice(GOOD_TYPES), request)
        cases.append(case)
    return cases


def tree(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``roots``: path -> (size, modification time in ns)."""
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns) for root in roots for path in [root, *root.rglob("*")]
    }


def check_answer(case: Case, sent, models: list[str]) -> None:
    """The server's answer to ``case``: 200 with one result per model, or a 4xx whose one-line message names one
    of ``case.names``; never a 500 or a traceback."""
    said = f"{case.what} -> {sent.status_code} {sent.text[:300]}"
    assert sent.status_code in (200, 400, 413, 415), said
    assert sent.headers["content-type"] == "application/json", said
    assert "Traceback" not in sent.text and 'File "' not in sent.text, said
    answer = sent.json()
    if sent.status_code == 200:
        assert not case.refused, said
        assert [result["model"] for result in answer["results"]] == models, said
        for result in answer["results"]:
            assert result["image"].startswith("data:image/png;base64,") and result["seconds"] >= 0, said
        return
    error = answer["error"]
    assert isinstance(error, str) and error and "\n" not in error and len(error) < 400, said
    assert any(name.lower() in error.lower() for name in case.names), said


@pytest.fixture(scope="module")
def runs(served_runs) -> Path:
    return served_runs


@pytest.mark.parametrize(("served", "n"), [(("ddpm", "gan"), 240), (("gan",), 80)])
def test_any_request_gets_200_or_a_one_line_4xx_naming_the_field_and_nothing_is_written(
    runs, served, n, tmp_path, monkeypatch, caplog, one_thread
):
    rng = random.Random(45)
    models = load_models([runs / kind for kind in served])
    client = TestClient(create_app(models, load_evaluator(), LIMITS), raise_server_exceptions=False)
    cases = structured_cases(rng) + random_cases(rng, n)
    if served == ("gan",):
        cases = [case.for_gans() for case in cases]
    monkeypatch.chdir(tmp_path)
    before = tree(runs, tmp_path)
    with caplog.at_level(logging.WARNING):
        for case in cases:
            headers = {} if case.content_type is None else {"Content-Type": case.content_type}
            sent = client.post("/api/generate", content=case.body, headers=headers)
            check_answer(case, sent, [model.name for model in models])
        good = client.post("/api/generate", json={"objects": ["red cube", "blue sphere"], "seed": 1})
        assert good.status_code == 200, good.text  # and it still serves
    assert [record.getMessage() for record in caplog.records] == []
    assert tree(runs, tmp_path) == before  # no file made, changed or removed: the server writes nothing
