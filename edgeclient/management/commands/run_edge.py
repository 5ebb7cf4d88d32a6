"""``manage.py run_edge``: ``python -m edgeclient run`` (edgeclient/cli/run.py)."""

from edgeclient.cli import run
from edgeclient.management.edge_command import EdgeCommand


class Command(EdgeCommand):
    module = run
