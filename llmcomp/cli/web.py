"""``llmcomp app``: start the web app."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("app", help="start the web app")
    p.add_argument("--host", default=None, help="default $LLMCOMP_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default $LLMCOMP_PORT or 7860")
    p.add_argument("--share", action="store_true", help="make a public gradio.live link")
    p.set_defaults(func=cmd_app)


def cmd_app(args: argparse.Namespace) -> int:
    from llmcomp.ui.app import launch

    launch(host=args.host, port=args.port, share=args.share)
    return 0
