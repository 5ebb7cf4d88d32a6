"""The cyclic garbage collector of a server process: its full collections between
requests, not inside them.

CPython collects its oldest generation when enough objects have survived the younger
ones, in whatever request is running then, and such a collection walks every object
the process tracks: Django's, DRF's and the app's modules, and every token the token
cache holds (telemetry.token_cache). In a gunicorn worker under load that stalled the
request in flight for as long as a slow answer takes (docs/PERFORMANCE.md, "Tenth
session").

So a server process, once its app is loaded, freezes what exists then (it lives as long
as the process: walking it again finds no garbage) and makes its full collections
itself, after a response has gone out (gunicorn's post_request hook, before the next
request is taken), about as often as CPython made them (``FULL_AFTER``). The young
generations are collected as before: they hold few objects and take little time.
Reference counting frees everything that is not in a cycle at once, as it always does.

Between requests is still not free: a worker collecting serves nobody, and under a
fleet's load each such pause (every token the cache had gathered since the app loaded,
walked again) was a second of slow reads across all workers (docs/PERFORMANCE.md,
"Thirteenth session"). So each full collection also freezes what survives it, and the
next walks only what came since. A long-lived object that becomes cyclic garbage after
its freeze waits for every ``THAW_EVERY``-th full collection, which walks everything.
"""

from __future__ import annotations

import gc

# A full collection after this many collections of the middle generation. CPython's
# own count is 10, but it also waits until a quarter more objects have survived since
# its last one, which in a server with a warm token cache is rarely: measured with
# bench/gc_pauses.py, 10 made full collections several times as often as CPython's.
FULL_AFTER = 100
# Every this many full collections, one walks the frozen objects too.
THAW_EVERY = 20
# Above any count a process reaches: CPython never starts a full collection itself.
_NEVER = 2**30
# Full collections made since the last one that walked everything.
_since_thaw = 0


def collects_oldest_by_count() -> bool:
    """Whether this Python's collector has three generations, each counted: the one
    this was made for; elsewhere the process keeps the collector as it comes."""
    return len(gc.get_threshold()) == 3 and len(gc.get_count()) == 3


def settle_after_load() -> bool:
    """Once the app is loaded: collect, freeze what is left, and leave the full
    collections to ``collect_if_due``. False where this Python's collector is not the
    one this was made for (nothing changed)."""
    if not collects_oldest_by_count():
        return False
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, _NEVER)
    return True


def collect_if_due(full_after: int = FULL_AFTER, thaw_every: int = THAW_EVERY) -> bool:
    """Between requests: the full collection the process owes, once the middle
    generation has been collected ``full_after`` times since the last one; what
    survives it is frozen. Every ``thaw_every``-th walks the frozen objects too."""
    global _since_thaw
    if gc.get_count()[2] < full_after:
        return False
    _since_thaw += 1
    if _since_thaw >= thaw_every:
        _since_thaw = 0
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    return True
