"""The end-to-end chaos run: simulate_p1 -> run_edge -> Caddy (https) -> gunicorn ->
PostgreSQL + Redis, with the edge SIGKILLed and every server stopped along the way.

    .venv/bin/python -m scripts.chaos --bounded      # CI: about 3 minutes
    .venv/bin/python -m scripts.chaos --minutes 30   # longer, on demand

``accounting`` and ``plan`` are pure (tested in tests/test_chaos_accounting.py);
``stack`` runs the processes; ``run`` drives the schedule. See docs/CHAOS.md.
"""
