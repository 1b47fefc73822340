"""`condgen serve`: the HTTP API (a good request, every kind of bad one, the cost bounds, models side by side), the
command line, and the page itself in a headless browser. The models are tiny runs trained once for the module."""

import base64
import contextlib
import io
import json
import logging
import math
import re
import shutil
import socket
import sys
import threading
import time

import numpy as np
import pytest
import torch
from conftest import headless_chromium, no_browser
from PIL import Image

import condgen
from condgen.cli import main
from condgen.data.imageio import to_uint8
from condgen.data.labels import LabelCodec
from condgen.evaluate.counter import DensityCounter, ObjectCounter
from condgen.evaluate.evaluator import Evaluator, load_evaluator
from condgen.pretrained import SHIPPED

pytest.importorskip("fastapi", reason="condgen serve needs the web extra (pip install 'condgen[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

from condgen.serve.app import create_app, take_slot  # noqa: E402
from condgen.serve.models import HungUpError, load_models, verdict  # noqa: E402
from condgen.serve.requests import Limits, parse_request  # noqa: E402

LIMITS = Limits(max_steps=10, queue_timeout=0.2)
LIMITS_20 = Limits(max_steps=20)  # room for ddpm's 20 steps on the tiny model
GOOD = {"objects": ["red cube", "blue sphere"], "sampler": "ddim", "steps": 4, "guidance": 2.0, "seed": 3}


@pytest.fixture(scope="module")
def runs(served_runs):
    """A ddpm run and a gan run, two training steps each on the small rendered set."""
    return {kind: served_runs / kind for kind in ("ddpm", "gan")}


@pytest.fixture(scope="module")
def shipped():
    return load_evaluator()


@pytest.fixture(scope="module")
def client(runs, shipped):
    return TestClient(create_app(load_models([runs["ddpm"]]), shipped, LIMITS))


def png(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))


def test_a_request_gets_the_image_its_denoising_strip_and_the_evaluators_verdict(client, runs, shipped):
    answer = client.post("/api/generate", json=GOOD)
    assert answer.status_code == 200, answer.text
    (result,) = answer.json()["results"]
    assert result["model"] == "ddpm" and result["kind"] == "ddpm" and result["seconds"] > 0
    assert result["settings"] == {"sampler": "ddim", "steps": 4, "guidance": 2.0, "seed": 3}
    assert png(result["image"]).size == (64, 64)
    assert result["strip_kind"] == "denoising" and png(result["strip"]).size == (5 * 64 + 6 * 2, 64 + 2 * 2)  # x_T + 4
    # the verdict is the shipped evaluator's on exactly the image the Python API makes for the same settings
    image = condgen.load(runs["ddpm"]).generate("red cube, blue sphere", seed=3, sampler="ddim", steps=4, guidance=2)
    expected = dict(zip(shipped.codec.names, shipped.scores(image)[0].tolist()))
    verdict = result["verdict"]
    assert [entry["name"] for entry in verdict["objects"]] == GOOD["objects"]
    for entry in verdict["objects"]:
        assert entry["probability"] == pytest.approx(expected[entry["name"]], abs=1e-4)
        assert entry["detected"] == (entry["probability"] > 0.5)
    assert [entry["name"] for entry in verdict["unrequested"]] == [
        name
        for name, p in sorted(expected.items(), key=lambda item: -item[1])
        if p > 0.5 and name not in GOOD["objects"]
    ]
    # and the shipped counter's count of the same image
    instances = dict(zip(shipped.codec.names, shipped.counter.instances(image)[0].tolist()))
    assert [entry["instances"] for entry in verdict["objects"]] == [round(instances[n]) for n in GOOD["objects"]]
    assert verdict["counted"] == int(shipped.counter.totals(image)[0]) and verdict["requested"] == 2
    assert verdict["exact_scene"] == (verdict["exact"] and verdict["counted"] == 2)
    assert client.post("/api/generate", json=GOOD).json()["results"][0]["image"] == result["image"]  # same seed
    assert client.post("/api/generate", json=GOOD | {"seed": 4}).json()["results"][0]["image"] != result["image"]
    default = client.post("/api/generate", json={"objects": ["gray cylinder"]}).json()["results"][0]
    assert default["settings"] | {"guidance": None} == {"sampler": "dpmpp", "steps": 3, "guidance": None, "seed": 0}


def fixed_evaluator(detected: dict[str, float], instances: dict[str, float] | None) -> Evaluator:
    """An evaluator whose probabilities are ``detected`` (0 for every other object) whatever the image, with a
    counter that counts ``instances`` of each object in every image (None: no counter)."""
    codec = LabelCodec.iclevr()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 24), torch.nn.Sigmoid())
    torch.nn.init.zeros_(model[1].weight)
    model[1].bias.data = torch.tensor([30.0 if detected.get(n, 0) > 0.5 else -30.0 for n in codec.names])
    if instances is None:
        return Evaluator(model, codec)
    counter = DensityCounter(24, width=4)
    torch.nn.init.zeros_(counter.density.weight)  # the image plays no part; each of the 8x8 cells holds 1/64
    counter.density.bias.data = torch.tensor(
        [math.log(math.expm1(instances[n] / 64)) if n in instances else -40.0 for n in codec.names]
    )
    return Evaluator(model, codec, counter=ObjectCounter(counter, codec))


@pytest.mark.parametrize(
    ("instances", "counted", "exact_scene"),
    [
        ({"red cube": 1, "blue sphere": 1}, 2, True),  # the scene asked for
        ({"red cube": 2, "blue sphere": 1}, 3, False),  # the red cube twice: the same set, one object too many
        ({"red cube": 1, "blue sphere": 1, "gray cube": 1.2}, 3, False),  # one the evaluator does not detect
        ({"red cube": 1}, 1, False),  # one short
    ],
)
def test_the_verdict_counts_the_objects_and_calls_an_exact_scene_only_for_each_requested_object_once(
    instances, counted, exact_scene
):
    image = torch.zeros(3, 64, 64)
    judged = verdict(fixed_evaluator({"red cube": 1, "blue sphere": 1}, instances), image, ("red cube", "blue sphere"))
    assert judged["exact"]  # the evaluator detects exactly the requested set every time
    assert (judged["counted"], judged["requested"], judged["exact_scene"]) == (counted, 2, exact_scene)
    expected = [round(instances.get(name, 0)) for name in ("red cube", "blue sphere")]
    assert [entry["instances"] for entry in judged["objects"]] == expected


def test_without_a_counter_the_verdict_keeps_its_evaluator_fields_and_leaves_the_counts_empty():
    judged = verdict(fixed_evaluator({"red cube": 1}, None), torch.zeros(3, 64, 64), ("red cube",))
    assert judged["exact"] and judged["objects"][0]["detected"]
    assert (judged["counted"], judged["requested"], judged["exact_scene"]) == (None, 1, None)
    assert judged["objects"][0]["instances"] is None


BAD = [
    (b"{not json", 400, "the request body is not JSON"),
    (b"[1, 2]", 400, "the request must be a JSON object"),
    ({"objects": ["red cube", "pink cube"]}, 400, 'ddpm: objects: unknown object "pink cube"'),
    ({"objects": ["red cub"]}, 400, 'did you mean "red cube"?'),
    ({"objects": ["red cube", "blue cube", "green cube", "gray cube"]}, 400, "4 asked for; the model takes at most 3"),
    ({"objects": ["red cube", "red cube"]}, 400, 'object "red cube" appears twice'),
    ({"objects": []}, 400, "objects: a list of object names is needed"),
    ({"objects": "red cube"}, 400, "objects: a list of object names is needed"),
    (GOOD | {"steps": -1}, 400, "steps: a whole number from 1 to 10, got -1"),
    (GOOD | {"steps": 11}, 400, "steps: a whole number from 1 to 10, got 11"),
    (GOOD | {"steps": 2.5}, 400, "steps: a whole number from 1 to 10, got 2.5"),
    (GOOD | {"sampler": "euler"}, 400, "sampler: unknown sampler 'euler'; choose ddpm, ddim or dpmpp"),
    (GOOD | {"guidance": -1}, 400, "guidance: a number from 0 to 100"),
    (GOOD | {"seed": "seven"}, 400, "seed: a whole number from 0 to 4294967295"),
    (GOOD | {"n": 4}, 400, 'unknown field "n": a request takes objects, sampler, steps, guidance, seed (one image'),
    (GOOD | {"sampler": "ddpm"}, 400, "sampler ddpm takes 20 steps here; this server allows at most 10 (--max-steps)"),
    ({"objects": ["red cube"], "sampler": "ddim"}, 400, "ddim would take 50; the model has only 20 noise levels"),
    (b'{"objects": ["red cube"], "guidance": NaN}', 400, "guidance: a number from 0 to 100 (1 = none, 0 = uncon"),
    (GOOD | {"guidance": 1e308}, 400, "guidance: a number from 0 to 100 (1 = none, 0 = unconditional), got 1e+308"),
    (b'{"objects": ["red cube"], "guidance": 1' + b"0" * 4000 + b"}", 400, "got a number of 4001 digits"),
    (b"[" * 2000 + b"]" * 2000, 400, "the request body nests too deep"),
    (json.dumps(GOOD | {"objects": ["red cube"] * 2000}).encode(), 413, "the request is over 4096 bytes"),
]


def test_bad_requests_get_a_clear_json_error_and_the_server_keeps_serving(client):
    for body, status, message in BAD:
        sent = (
            client.post("/api/generate", content=body, headers={"Content-Type": "application/json"})
            if isinstance(body, bytes)
            else client.post("/api/generate", json=body)
        )
        assert (sent.status_code, message in sent.json()["error"]) == (status, True), (body, sent.text)
    for headers in ({"Content-Type": "text/plain"}, {}):  # what another site's page may send without asking
        sent = client.post("/api/generate", content=json.dumps(GOOD).encode(), headers=headers)
        assert sent.status_code == 415 and "Content-Type: application/json" in sent.json()["error"]
    assert client.get("/api/nothing").json() == {"error": "Not Found"}
    assert client.get("/api/generate").status_code == 405
    assert client.post("/api/generate", json=GOOD).status_code == 200


def test_a_request_waits_for_a_free_slot_and_gets_503_when_none_frees(runs, shipped):
    app = create_app(load_models([runs["gan"]]), shipped, Limits(max_concurrent=1, queue_timeout=0.3))
    client = TestClient(app)
    assert app.state.slots.acquire(blocking=False)  # a generation in progress holds the only slot
    started = time.perf_counter()
    busy = client.post("/api/generate", json={"objects": ["red cube"]})
    assert busy.status_code == 503 and "busy" in busy.json()["error"] and busy.headers["retry-after"] == "5"
    assert time.perf_counter() - started >= 0.3  # it waited its turn first
    threading.Timer(0.1, app.state.slots.release).start()  # the running generation ends while the next one waits
    assert client.post("/api/generate", json={"objects": ["red cube"]}).status_code == 200
    assert app.state.slots.acquire(blocking=False)  # the slot was given back
    app.state.slots.release()


def test_two_models_answer_the_same_request_side_by_side(runs, shipped):
    client = TestClient(create_app(load_models([runs["ddpm"], runs["gan"], runs["ddpm"]]), shipped, LIMITS))
    offer = client.get("/api/models").json()
    assert [(m["name"], m["generation"]) for m in offer["models"]] == [
        ("ddpm", "diffusion"), ("gan", "gan"), ("ddpm (2)", "diffusion")
    ]  # fmt: skip
    assert offer["models"][0]["noise_steps"] == 20 and offer["limits"]["max_steps"] == 10
    results = client.post("/api/generate", json=GOOD).json()["results"]
    assert [r["model"] for r in results] == ["ddpm", "gan", "ddpm (2)"]
    assert results[0]["image"] == results[2]["image"]  # the same model, the same request
    gan = results[1]
    assert gan["settings"] == {"seed": 3} and gan["strip_kind"] == "interpolation"  # a GAN takes the seed alone
    assert [r["ignored"] for r in results] == [[], ["sampler", "steps", "guidance"], []]  # and says so
    assert png(gan["strip"]).size == (8 * 64 + 9 * 2, 64 + 2 * 2)
    assert [entry["name"] for entry in gan["verdict"]["objects"]] == GOOD["objects"]
    image = condgen.load(runs["gan"]).generate("red cube, blue sphere", seed=3)[0]
    assert torch.equal(torch.from_numpy(np.array(png(gan["image"]))), to_uint8(image).permute(1, 2, 0))


def test_the_command_serves_the_shipped_model_by_default_needs_the_extra_and_binds_to_localhost(
    runs, monkeypatch, capsys
):
    assert main(["serve", "--model", str(runs["ddpm"].parent / "nowhere")]) == 2
    err = capsys.readouterr().err
    shipped = ", ".join(SHIPPED)
    assert err.count("\n") == 1 and f"no such run or model folder, nor a shipped model (shipped: {shipped})" in err
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "default: every shipped model" in " ".join(capsys.readouterr().out.split())
    started = {}
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(options, app=app))
    assert main(["serve"]) == 0
    assert [m["name"] for m in TestClient(started["app"]).get("/api/models").json()["models"]] == list(SHIPPED)
    assert main(["serve", "--model", str(runs["gan"]), "--max-steps", "5"]) == 0
    assert (started["host"], started["port"]) == ("127.0.0.1", 8000)
    assert TestClient(started["app"]).get("/api/models").json()["limits"]["max_steps"] == 5
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the extra were not installed
    capsys.readouterr()
    assert main(["serve", "--model", str(runs["gan"])]) == 2
    assert (
        capsys.readouterr().err == "condgen: error: condgen serve needs the web extra: pip install 'condgen[serve]'\n"
    )


@contextlib.contextmanager
def serving(app):
    """``app`` served by uvicorn on a free local port, in a thread: yields the page's address. Its log goes to the
    root logger, where ``caplog`` sees it."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.started
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        running.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(runs, shipped):
    """The page's server for the browser."""
    with serving(create_app(load_models([runs["ddpm"], runs["gan"]]), shipped, LIMITS)) as url:
        yield url


@pytest.mark.skipif(bool(no_browser()), reason=no_browser() or "-")
def test_the_page_generates_in_a_real_browser(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait

    browser = headless_chromium()
    try:
        browser.get(server)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_element(By.ID, "generate").is_enabled())
        colours, shapes = (
            browser.find_elements(By.CSS_SELECTOR, ".colour"),
            browser.find_elements(By.CSS_SELECTOR, ".shape"),
        )
        for i, (colour, shape) in enumerate([("red", "cube"), ("blue", "sphere")]):
            Select(colours[i]).select_by_value(colour)
            Select(shapes[i]).select_by_value(shape)
        browser.find_element(By.ID, "steps").send_keys("3")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".result img.image")) == 2)
        assert browser.find_element(By.ID, "error").text == ""
        cards = browser.find_elements(By.CSS_SELECTOR, ".result")
        assert [card.find_element(By.TAG_NAME, "h2").text for card in cards] == ["ddpm (ddpm)", "gan (gan)"]
        for card in cards:
            image = card.find_element(By.CSS_SELECTOR, "img.image")
            assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 64
            rows = [row.text for row in card.find_elements(By.CSS_SELECTOR, "tr.requested")]
            assert [row.split(" ")[0:2] for row in rows] == [["red", "cube"], ["blue", "sphere"]]
            assert all(row.endswith(("detected", "missing")) for row in rows)
            count = card.find_element(By.CSS_SELECTOR, ".verdict .count").text  # a warning unless 2 are counted
            said = re.fullmatch(r"(Warning: )?(\d+) objects? counted, 2 requested(\.|: .+\.)", count)
            assert said and (said[1] is None) == (said[2] == "2")
            assert card.find_element(By.CSS_SELECTOR, ".verdict .scene").text.endswith(("yes", "no"))
        assert "steps 3" in cards[0].text and "made in" in cards[0].text and "seed 0" in cards[1].text
        assert "Ignored: steps (a GAN draws in one pass)." in cards[1].text and "Ignored" not in cards[0].text
        assert [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")] == []
        Select(colours[1]).select_by_value("red")
        Select(shapes[1]).select_by_value("cube")
        browser.find_element(By.ID, "generate").click()  # the same object twice: the server's message shows
        wait.until(lambda b: "appears twice" in b.find_element(By.ID, "error").text)
    finally:
        browser.quit()


def test_the_server_says_when_it_listens_beyond_loopback():
    from condgen.serve.command import beyond_loopback

    assert [beyond_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost")] == [False] * 4
    assert [beyond_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.4", "example.org")] == [True] * 4


def test_a_gan_alone_refuses_diffusion_settings_naming_the_field(runs):
    alone = TestClient(create_app(load_models([runs["gan"]]), None, LIMITS))
    for field, value in (("sampler", "ddim"), ("steps", 4), ("guidance", 2.0)):
        refused = alone.post("/api/generate", json={"objects": ["red cube"], field: value})
        assert (refused.status_code, refused.json()["error"]) == (
            400, f"{field}: gan is a GAN: it draws in one pass and takes no sampler, steps or guidance"
        )  # fmt: skip
    unset = {"objects": ["red cube"], "sampler": None, "steps": None, "guidance": None, "seed": 2}  # the defaults
    served = alone.post("/api/generate", json=unset)
    assert served.status_code == 200 and served.json()["results"][0]["ignored"] == []
    two = TestClient(create_app(load_models([runs["gan"], runs["gan"]]), None, LIMITS))
    refused = two.post("/api/generate", json={"objects": ["red cube"], "guidance": 1.0, "steps": 2})
    assert refused.json()["error"] == (
        "steps: gan, gan (2) are GANs: they draw in one pass and take no sampler, steps or guidance"
    )


class SetAfter(threading.Event):
    """A cancel flag that reads as set from its ``n``-th look on, counting the looks: a client that hangs up while
    its image is generating."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.looks = n, 0

    def is_set(self) -> bool:
        self.looks += 1
        return self.looks >= self.n


@pytest.mark.parametrize("model", ["ddpm", "gan"])
def test_a_generation_whose_client_hangs_up_stops_at_the_next_step(runs, model):
    (served,) = load_models([runs[model]])
    wanted = parse_request({"objects": ["red cube"]} | ({"sampler": "ddpm"} if model == "ddpm" else {}), LIMITS_20)
    with pytest.raises(HungUpError):
        served.answer(wanted, None, LIMITS_20, SetAfter(1))  # hung up while waiting: nothing is generated
    # one look before any work, then one at x_T and after each of ddpm's 20 steps, or one after a GAN's image
    looks = 4 if model == "ddpm" else 2  # hung up after ddpm's second step, or before a GAN's interpolation strip
    cancel = SetAfter(looks)
    with pytest.raises(HungUpError):
        served.answer(wanted, None, LIMITS_20, cancel)
    assert cancel.looks == looks  # it stopped there, and looked no more
    assert "image" in served.answer(wanted, None, LIMITS_20, threading.Event())  # a flag never set changes nothing


def test_a_waiting_request_whose_client_hangs_up_leaves_the_queue_at_once():
    slots = threading.BoundedSemaphore(1)
    assert slots.acquire(blocking=False)  # a generation holds the only slot
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    started = time.perf_counter()
    with pytest.raises(HungUpError):
        take_slot(slots, 30, cancel)
    assert time.perf_counter() - started < 2  # not the 30 s it was ready to wait
    slots.release()
    take_slot(slots, 0.1, threading.Event())  # the next takes the free slot
    assert not slots.acquire(blocking=False)


@pytest.fixture(scope="module")
def thousand_levels(runs, tmp_path_factory):
    """The tiny ddpm run with T = 1000 noise levels: the same weights, and its ddpm sampler takes 1000 guided
    steps per image (several seconds on a CPU) where its dpmpp takes 3."""
    folder = tmp_path_factory.mktemp("levels") / "ddpm-1000"
    shutil.copytree(runs["ddpm"], folder)
    config = folder / "config.yaml"
    config.write_text(config.read_text().replace("num_steps: 20", "num_steps: 1000"))
    return folder


def hang_up_later(port: int, body: bytes, sent: int | None = None) -> socket.socket:
    """A client that posts ``body`` (its first ``sent`` bytes only, when given) and will close without reading."""
    client = socket.create_connection(("127.0.0.1", port))
    head = "POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    client.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:sent])
    return client


def test_clients_that_hang_up_free_the_queue_for_one_that_waits(thousand_levels, caplog):
    import httpx

    limits = Limits(max_steps=1000, max_concurrent=1, queue_timeout=30)
    app = create_app(load_models([thousand_levels]), None, limits)
    assert TestClient(app).get("/api/models").json()["models"][0]["noise_steps"] == 1000
    long = json.dumps({"objects": ["red cube", "blue sphere"], "sampler": "ddpm"}).encode()
    with caplog.at_level(logging.WARNING), serving(app) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        storm = [hang_up_later(port, long) for _ in range(3)] + [hang_up_later(port, long, sent=10)]  # one mid-body
        time.sleep(0.2)  # one generates, two wait for its slot, one has sent a part of its body
        for client in storm:
            client.close()
        started = time.perf_counter()
        answer = httpx.post(f"{url}api/generate", json={"objects": ["red cube"], "steps": 3}, timeout=60)
        waited = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    assert waited < 3  # the storm would hold the only slot for 3 x 1000 steps, past the 30 s queue timeout
    assert app.state.slots.acquire(blocking=False)  # nothing still generating holds it
    app.state.slots.release()
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
