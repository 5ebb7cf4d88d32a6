"""The garbage collector of a server process makes its full collections between
requests, not inside them (p1common.collector, wired by deploy/gunicorn.conf.py)."""

from __future__ import annotations

import gc
import os
import runpy
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from p1common import collector
from p1common.processes import ROOT, database_url, listening_socket

CONF = ROOT / "deploy" / "gunicorn.conf.py"
TIMEOUT_S = 30


@pytest.fixture
def restored_collector() -> Iterator[list[int]]:
    """The collector as the test found it afterwards; yields the generations of the
    collections made meanwhile, in order."""
    threshold = gc.get_threshold()
    made: list[int] = []

    def record(phase: str, info: dict) -> None:
        if phase == "stop":
            made.append(info["generation"])

    gc.callbacks.append(record)
    collector._since_thaw = 0
    try:
        yield made
    finally:
        gc.callbacks.remove(record)
        gc.unfreeze()
        gc.set_threshold(*threshold)
        collector._since_thaw = 0


class _Node:
    other: _Node | None = None


def _cyclic_garbage(pairs: int) -> None:
    for _ in range(pairs):
        a, b = _Node(), _Node()
        a.other, b.other = b, a


def test_a_settled_process_makes_no_full_collection_by_itself(restored_collector):
    assert collector.settle_after_load()
    assert gc.get_freeze_count() > 0
    restored_collector.clear()
    _cyclic_garbage(300_000)
    assert 0 in restored_collector and 1 in restored_collector  # the young ones go on
    assert 2 not in restored_collector
    assert gc.get_count()[2] > gc.get_threshold()[1]  # CPython's own count passed long ago


def test_the_owed_full_collection_runs_once_due_and_frees_the_cycles(restored_collector):
    collector.settle_after_load()
    restored_collector.clear()
    assert not collector.collect_if_due(full_after=1_000_000)
    assert 2 not in restored_collector
    _cyclic_garbage(300_000)
    assert collector.collect_if_due(full_after=10)
    assert restored_collector.count(2) == 1
    assert gc.get_count()[2] == 0
    assert not collector.collect_if_due(full_after=10)  # nothing owed right after one
    assert restored_collector.count(2) == 1


def _owe_a_full_collection() -> None:
    while gc.get_count()[2] < 1:
        _cyclic_garbage(10_000)


def test_what_survives_a_full_collection_is_frozen_and_not_walked_by_the_next(
    restored_collector,
):
    collector.settle_after_load()
    kept = [_Node() for _ in range(50_000)]
    frozen = gc.get_freeze_count()
    _owe_a_full_collection()
    assert collector.collect_if_due(full_after=1)
    assert gc.get_freeze_count() >= frozen + len(kept)
    assert all(gc.is_tracked(node) for node in kept[:3])


def test_cyclic_garbage_among_frozen_objects_goes_at_the_thawing_collection(
    restored_collector,
):
    collector.settle_after_load()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    _owe_a_full_collection()
    assert collector.collect_if_due(full_after=1, thaw_every=3)  # the pair frozen
    del a, b  # now a cycle that only a walk of the frozen objects can find
    _owe_a_full_collection()
    assert collector.collect_if_due(full_after=1, thaw_every=3)
    assert gone() is not None
    _owe_a_full_collection()
    assert collector.collect_if_due(full_after=1, thaw_every=3)  # the third: thaws
    assert gone() is None


def _conf(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    monkeypatch.delenv("GUNICORN_GC_FULL_AFTER", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONF))


def test_the_deployment_config_settles_its_workers_and_collects_after_requests(
    monkeypatch, restored_collector
):
    conf = _conf(monkeypatch, GUNICORN_GC_FULL_AFTER="10")
    conf["post_worker_init"](None)
    assert gc.get_freeze_count() > 0
    restored_collector.clear()
    conf["post_request"](None, None, None, None)
    assert 2 not in restored_collector  # nothing owed yet
    _cyclic_garbage(300_000)
    restored_collector.clear()
    conf["post_request"](None, None, None, None)
    assert restored_collector == [2]


def test_the_deployment_config_defaults_to_the_collectors_cadence(monkeypatch, restored_collector):
    conf = _conf(monkeypatch)
    conf["post_worker_init"](None)
    assert gc.get_freeze_count() > 0
    _cyclic_garbage(300_000)  # fewer middle collections than collector.FULL_AFTER
    assert gc.get_count()[2] < collector.FULL_AFTER
    restored_collector.clear()
    conf["post_request"](None, None, None, None)
    assert 2 not in restored_collector


def test_gc_full_after_zero_leaves_the_collector_as_cpython_has_it(monkeypatch, restored_collector):
    threshold = gc.get_threshold()
    conf = _conf(monkeypatch, GUNICORN_GC_FULL_AFTER="0")
    conf["post_worker_init"](None)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == threshold
    with pytest.raises(SystemExit, match="GUNICORN_GC_FULL_AFTER"):
        _conf(monkeypatch, GUNICORN_GC_FULL_AFTER="often")


def _serve_probe(tmp_path: Path, full_after: str) -> dict:
    """gunicorn with the deployment's configuration serving tests/gc_probe.py (one sync
    worker) 60 requests; the probe's last answer. The socket is bound here and handed
    over, so the first request waits in its backlog until the worker is up."""
    home = tmp_path / f"home-{full_after}"
    home.mkdir()
    with listening_socket(0) as sock:
        port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
        env.update(
            HOME=str(home),
            DATABASE_URL=database_url(),
            GUNICORN_BIND=f"fd://{sock.fileno()}",
            WEB_CONCURRENCY="1",
            GUNICORN_ACCESS_LOG="",
            GUNICORN_GC_FULL_AFTER=full_after,
        )
        gunicorn = Path(sys.executable).with_name("gunicorn")
        server = subprocess.Popen(
            [str(gunicorn), "-c", str(CONF), "tests.gc_probe:app"],
            cwd=ROOT,
            env=env,
            pass_fds=[sock.fileno()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT_S) as client:
            for _ in range(59):
                client.get("/").raise_for_status()
            return client.get("/").json()
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=TIMEOUT_S)
        assert "Traceback" not in stderr, stderr


def test_gunicorn_workers_make_their_full_collections_between_requests(db, tmp_path):
    answer = _serve_probe(tmp_path, "10")
    assert answer["frozen"] > 0
    assert answer["full"] >= 1
    assert answer["full_inside_requests"] == 0


def test_without_the_setting_cpython_collects_inside_the_requests(db, tmp_path):
    # The control: the probe's garbage does make CPython collect during requests.
    answer = _serve_probe(tmp_path, "0")
    assert answer["frozen"] == 0
    assert answer["full_inside_requests"] >= 1
