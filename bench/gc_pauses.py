"""The garbage collector's pauses inside requests: CPython's own policy against the
deployment's (p1common.collector: the app frozen once loaded, full collections between
requests).

    .venv/bin/python bench/gc_pauses.py [--households 10000] [--requests 6000] [--rounds 3]

A server process as gunicorn's worker has it: the app loaded (p1platform.wsgi), then,
for the deployment's policy, ``settle_after_load`` (its post_worker_init hook); then
every household's tokens checked once, so the token cache holds them as after a while
in service; then ``--requests`` requests through Django's request handler: live batches
of the edge's default shape (5 samples), and a realtime read of an open dashboard after
every second batch. Between requests the deployment's process calls ``collect_if_due``
(its post_request hook). Each policy runs in a process of its own, alternating, on one
database. Every collection is timed (gc.callbacks); printed per round and policy: full
collections inside and between requests, the longest pause inside a request, the
collector's time per thousand requests, the requests' p99 and slowest; then the ratios
of the medians, CPython's policy against the deployment's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database  # noqa: E402

POLICIES = ("cpython", "deployment")
RESULT_PREFIX = "gc-pauses-result: "
SAMPLES_PER_BATCH = 5
# Samples of a round lie in a window of their own, older than this, so no batch is a
# duplicate and none is in the future.
HISTORY_DAYS = 30


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=6_000, help="per round and policy")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/p1bench_gc"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
    )
    # Internal: one policy's round in this process.
    parser.add_argument("--serve", choices=POLICIES, help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--households-file", help=argparse.SUPPRESS)
    return parser.parse_args()


def serve(args: argparse.Namespace) -> None:
    """One policy's round, in this process; prints one result line."""
    import gc

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()
    import io

    from django.core.handlers.wsgi import WSGIHandler

    from p1common import collector
    from p1common.samples import sample

    app = WSGIHandler()  # the app as p1platform.wsgi loads it, before the worker's hook
    deployment = args.serve == "deployment"
    if deployment:
        collector.settle_after_load()
    households = [line.split() for line in Path(args.households_file).read_text().splitlines()]

    pauses: list[tuple[int, float, bool]] = []  # generation, ms, inside a request
    state = {"began": 0.0, "inside": False}

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            state["began"] = time.perf_counter()
        else:
            pauses.append(
                (info["generation"], (time.perf_counter() - state["began"]) * 1000, state["inside"])
            )

    def call(method: str, path: str, token: str, body: bytes = b"") -> str:
        """One request as gunicorn hands it to the app; its status line."""
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "localhost",
            "HTTP_AUTHORIZATION": f"Bearer {token}",
            "CONTENT_TYPE": "application/json" if body else "",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        status = []
        response = app(environ, lambda s, headers, exc_info=None: status.append(s))
        try:
            b"".join(response)
        finally:
            response.close()
        return status[0]

    start = datetime.now(UTC) - timedelta(days=HISTORY_DAYS)
    start += timedelta(seconds=args.round * args.requests * 10 * 2)
    if deployment:
        start += timedelta(seconds=args.requests * 10)
    readers = households[: len(households) // 20]
    plan = []
    for n in range(args.requests):
        if n % 3 == 2:
            plan.append(("read", readers[n % len(readers)][2], None))
            continue
        _, ingest, _ = households[n % len(households)]
        first = start + timedelta(seconds=10 * n)
        samples = [sample(first + timedelta(seconds=2 * k)) for k in range(SAMPLES_PER_BATCH)]
        plan.append(("ingest", ingest, json.dumps({"samples": samples}).encode()))

    gc.callbacks.append(timed)
    latencies = []
    began = time.perf_counter()
    for kind, token, body in plan:
        state["inside"] = True
        t = time.perf_counter()
        if kind == "ingest":
            status = call("POST", "/v1/ingest", token, body)
        else:
            status = call("GET", "/v1/realtime", token)
        latencies.append((time.perf_counter() - t) * 1000)
        state["inside"] = False
        if not status.startswith("200"):
            raise SystemExit(f"error: {kind} answered {status}")
        if deployment:
            collector.collect_if_due()
    wall = time.perf_counter() - began
    gc.callbacks.remove(timed)
    latencies.sort()
    inside = [ms for _, ms, i in pauses if i]
    result = {
        "policy": args.serve,
        "requests": len(plan),
        "seconds": wall,
        "full_inside": sum(1 for g, _, i in pauses if g == 2 and i),
        "full_between": sum(1 for g, _, i in pauses if g == 2 and not i),
        "longest_inside_ms": max(inside, default=0.0),
        "gc_ms_per_1000": 1000 * sum(ms for _, ms, _ in pauses) / len(plan),
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))],
        "slowest_ms": latencies[-1],
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def main() -> None:
    args = parse_args()
    os.environ.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        INGEST_STEPS_WORKER="on",
        LOG_LEVEL="error",
    )
    if args.serve:
        serve(args)
        return
    fresh_database(args.database_url, args.redis_url)
    from django.core.cache import cache

    from bench.fleet import make_households, share_tokens

    cache.clear()
    households = Path(f"/tmp/p1-gc-pauses-{os.getpid()}.txt")  # noqa: S108 - a bench's scratch file
    make_households(args.households, households)
    share_tokens(households)
    results: dict[str, list[dict]] = {p: [] for p in POLICIES}
    try:
        for n in range(args.rounds):
            order = POLICIES if n % 2 == 0 else POLICIES[::-1]
            for policy in order:
                command = [
                    sys.executable, __file__, "--serve", policy, "--round", str(n),
                    "--requests", str(args.requests), "--households-file", str(households),
                    "--database-url", args.database_url, "--redis-url", args.redis_url,
                ]  # fmt: skip
                out = subprocess.run(
                    command, cwd=ROOT, env=os.environ, capture_output=True, text=True, check=False
                )
                lines = out.stdout.splitlines()
                line = next((ln for ln in lines if ln.startswith(RESULT_PREFIX)), None)
                if line is None:
                    sys.exit(f"error: the {policy} round printed no result:\n{out.stderr[-2000:]}")
                r = json.loads(line[len(RESULT_PREFIX) :])
                results[policy].append(r)
                print(
                    f"round {n + 1} {policy:<10}: full collections {r['full_inside']} inside / "
                    f"{r['full_between']} between requests, longest pause inside a request "
                    f"{r['longest_inside_ms']:.1f} ms, collector {r['gc_ms_per_1000']:.0f} ms per "
                    f"1000 requests, requests p99 {r['p99_ms']:.2f} ms, "
                    f"slowest {r['slowest_ms']:.1f} ms",
                    flush=True,
                )
    finally:
        households.unlink(missing_ok=True)
    median = statistics.median
    print(f"\n{args.households:,} households' tokens cached, {args.requests:,} requests per round")
    for key, label in (
        ("longest_inside_ms", "longest pause inside a request"),
        ("p99_ms", "requests' p99"),
        ("slowest_ms", "slowest request"),
        ("gc_ms_per_1000", "collector's time per 1000 requests"),
    ):
        a = median(r[key] for r in results["cpython"])
        b = median(r[key] for r in results["deployment"])
        ratio = a / b if b else float("inf")
        print(f"{label}: CPython {a:.2f} ms, deployment {b:.2f} ms, ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
