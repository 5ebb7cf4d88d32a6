"""``manage.py edge_status``: ``python -m edgeclient status`` (edgeclient/cli/status.py)."""

from edgeclient.cli import status
from edgeclient.management.edge_command import EdgeCommand


class Command(EdgeCommand):
    module = status
