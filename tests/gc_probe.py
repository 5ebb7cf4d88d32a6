"""A WSGI app for tests/test_collector.py, served by gunicorn with the deployment's
configuration: each request leaves cyclic garbage that outlives the young collections
(as a request's objects do when it runs across them), and answers what the collector
did in this worker: whether the app was frozen, and how many full collections ran while
a request was in progress and how many in all."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterable
from typing import Any

_state = {"in_request": False, "full_inside": 0, "full": 0}


def _count_full(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 2:
        _state["full"] += 1
        _state["full_inside"] += _state["in_request"]


gc.callbacks.append(_count_full)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    _state["in_request"] = True
    try:
        held = []
        for _ in range(20_000):
            a, b = _Node(), _Node()
            a.other, b.other = b, a
            held.append(a)
        body = json.dumps(
            {
                "frozen": gc.get_freeze_count(),
                "full_inside_requests": _state["full_inside"],
                "full": _state["full"],
            }
        ).encode()
    finally:
        _state["in_request"] = False
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
