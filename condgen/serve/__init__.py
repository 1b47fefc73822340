"""``condgen serve``: a local web page that generates one image per request from one or more models, side by side,
with the denoising (or interpolation) strip, the evaluator's verdict and the time it took.

:mod:`condgen.serve.requests` checks what a request asks for, :mod:`condgen.serve.models` answers it, and
:mod:`condgen.serve.app` is the web server (FastAPI and uvicorn, the optional ``serve`` extra), with ``page.html``.
"""
