"""``manage.py simulate_p1``: ``python -m edgeclient simulate`` (edgeclient/cli/simulate.py)."""

from edgeclient.cli import simulate
from edgeclient.management.edge_command import EdgeCommand


class Command(EdgeCommand):
    module = simulate
