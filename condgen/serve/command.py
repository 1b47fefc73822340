"""``condgen serve``: load the models and the evaluator, then run the web server until interrupted."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from condgen.errors import CondgenError
from condgen.pretrained import shipped_folders
from condgen.serve.requests import Limits


def serve_command(args: argparse.Namespace) -> int:
    """Serves the page for ``args.models`` on ``args.host``:``args.port`` (127.0.0.1 unless told otherwise) until
    interrupted; returns the exit status."""
    try:
        import fastapi  # noqa: F401  (only to learn whether the extra is installed)
        import uvicorn
    except ImportError:
        raise CondgenError("condgen serve needs the web extra: pip install 'condgen[serve]'") from None
    from condgen.evaluate.evaluator import load_evaluator
    from condgen.serve.app import create_app
    from condgen.serve.models import load_models

    limits = Limits(max_steps=args.max_steps, max_concurrent=args.max_concurrent, queue_timeout=args.queue_timeout)
    models = load_models(args.models or shipped_folders(), args.checkpoint)  # no --model: every shipped one
    app = create_app(models, load_evaluator(args.evaluator), limits)
    print(f"serving {', '.join(model.name for model in models)} at http://{args.host}:{args.port}/ (Ctrl+C stops)")
    if beyond_loopback(args.host):
        print(
            f"condgen serve: listening on {args.host}, beyond this machine's loopback: anyone who can reach it can "
            "generate, with no authentication",
            file=sys.stderr,
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def beyond_loopback(host: str) -> bool:
    """Whether listening on ``host`` lets other machines connect: any address but a loopback one (127.0.0.0/8,
    ::1) or the name localhost."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return True
