"""The test suite's names for the server harness (p1common.processes): gunicorn on a
socket the test opened first, on the test database pytest-django created.

The test binds and listens before gunicorn starts, then hands the descriptor over
(``fd://``). Connections made before the worker is up wait in the kernel's backlog, so
no test polls or sleeps for the server to come up.
"""

from __future__ import annotations

from p1common.processes import ROOT, ServerProcess, database_url, listening_socket, run_server

__all__ = ["ROOT", "ServerProcess", "database_url", "listening_socket", "run_server"]
