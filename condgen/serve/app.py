"""The web server of ``condgen serve``: the page, the models it offers and one generation per request, with at
most ``Limits.max_concurrent`` generations at once. Needs the ``serve`` extra (FastAPI and uvicorn)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from condgen.errors import CondgenError
from condgen.evaluate.evaluator import Evaluator
from condgen.serve.models import HungUpError, ServedModel, check_request
from condgen.serve.requests import FIELDS, Limits, parse_request
from condgen.serve.requests import Request as Wanted

SLOT_POLL = 0.05  # seconds between a waiting request's looks at whether its client hung up
HUNG_UP = 499  # the status nginx logs for a client that closed its request; nobody receives it


class BusyError(Exception):
    """Every generation slot stayed taken for the whole queue timeout."""


def create_app(models: list[ServedModel], evaluator: Evaluator | None, limits: Limits) -> FastAPI:
    """The application: ``GET /`` the page, ``GET /api/models`` what it offers, ``POST /api/generate`` one image
    from every model. Errors are JSON ``{"error": "..."}`` with a 4xx status for the caller's mistakes."""
    app = FastAPI(title="condgen", docs_url=None, redoc_url=None, openapi_url=None)
    # A thread semaphore, since generation runs in worker threads; requests past it wait, then get 503.
    app.state.slots = threading.BoundedSemaphore(limits.max_concurrent)
    page = resources.files("condgen.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:  # async: never waits behind generations for a worker thread
        return page

    @app.get("/api/models")
    async def offer() -> dict:
        return _offer(models, evaluator, limits)

    @app.post("/api/generate")
    async def generate(request: Request) -> JSONResponse:
        return await _generate(request, app.state.slots, models, evaluator, limits)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    return app


def _offer(models: list[ServedModel], evaluator: Evaluator | None, limits: Limits) -> dict:
    """``GET /api/models``: the models, the request's fields, the limits and whether an evaluator judges."""
    return {
        "models": [model.describe() for model in models],
        "fields": list(FIELDS),
        "limits": {"max_steps": limits.max_steps, "max_concurrent": limits.max_concurrent},
        "evaluator": evaluator is not None,
    }


async def _generate(
    request: Request,
    slots: threading.BoundedSemaphore,
    models: list[ServedModel],
    evaluator: Evaluator | None,
    limits: Limits,
) -> JSONResponse:
    """``POST /api/generate``: every model's answer to one request; 413 for a body over ``limits.max_body``, 400
    for a request that is not JSON or that a model refuses, 503 when no slot frees in time, 500 when a model fails;
    415 for a body not sent as application/json, which a browser sends cross-site only after asking (CORS), so
    another web page a user visits cannot make this server generate. A request whose client hangs up leaves the
    queue, or stops generating at the next step, and frees its slot for those still waiting."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return _error(415, "send the request as JSON, with the header Content-Type: application/json")
    try:
        body = await _read_body(request, limits.max_body)
    except ClientDisconnect:
        return _error(HUNG_UP, "the client hung up before its request was read")
    if body is None:
        return _error(413, f"the request is over {limits.max_body} bytes; one request is a few dozen")
    try:
        wanted = _checked_request(body, models, limits)
    except CondgenError as exc:
        return _error(400, str(exc))
    cancel = threading.Event()
    watch = asyncio.create_task(_cancel_on_hang_up(request, cancel))
    try:
        return JSONResponse(await run_in_threadpool(_generate_all, wanted, slots, models, evaluator, limits, cancel))
    except HungUpError:
        return _error(HUNG_UP, "the client hung up; its generation stopped")
    except BusyError:
        message = f"busy: {limits.max_concurrent} generation(s) running and others waiting; try again shortly"
        return _error(503, message, headers={"Retry-After": "5"})
    except CondgenError as exc:  # a model that fails at generation (non-finite weights, say)
        return _error(500, str(exc))
    finally:
        watch.cancel()


async def _read_body(request: Request, max_body: int) -> bytes | None:
    """The request's body, or None as soon as it passes ``max_body`` bytes, however long it says it is."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body:
            return None
    return body


async def _cancel_on_hang_up(request: Request, cancel: threading.Event) -> None:
    """Sets ``cancel`` when the client hangs up. Once the body is read, the server's next ASGI message is
    ``http.disconnect``, which it sends when the connection closes (a closed socket, a browser tab closed, a
    client's timeout), so this waits for it rather than polling."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    cancel.set()


def _checked_request(body: bytes, models: list[ServedModel], limits: Limits) -> Wanted:
    """The request in ``body``, checked against every model before any works, so a bad request costs nothing."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CondgenError(f"the request body is not JSON ({exc})") from None
    except RecursionError:  # brackets nested thousands deep fit in a few kB
        raise CondgenError("the request body nests too deep; a request is one flat JSON object") from None
    wanted = parse_request(payload, limits)
    check_request(models, wanted, limits)
    return wanted


def _generate_all(
    wanted: Wanted,
    slots: threading.BoundedSemaphore,
    models: list[ServedModel],
    evaluator: Evaluator | None,
    limits: Limits,
    cancel: threading.Event,
) -> dict:
    """Every model's answer, in a worker thread, once a generation slot frees (:class:`BusyError` if none does
    within ``limits.queue_timeout``); :class:`HungUpError` as soon as ``cancel`` is set, waiting or generating."""
    take_slot(slots, limits.queue_timeout, cancel)
    try:
        return {"results": [model.answer(wanted, evaluator, limits, cancel) for model in models]}
    finally:
        slots.release()


def take_slot(slots: threading.BoundedSemaphore, timeout: float, cancel: threading.Event) -> None:
    """Takes one of ``slots``, waiting at most ``timeout`` seconds (then :class:`BusyError`) and leaving the queue
    within ``SLOT_POLL`` seconds once ``cancel`` is set (:class:`HungUpError`)."""
    deadline = time.monotonic() + timeout
    while not cancel.is_set():
        if slots.acquire(timeout=max(0.0, min(SLOT_POLL, deadline - time.monotonic()))):
            return
        if time.monotonic() >= deadline:
            raise BusyError
    raise HungUpError


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
