"""``manage.py hw_pair``: ``python -m edgeclient pair`` (edgeclient/cli/pair.py)."""

from edgeclient.cli import pair
from edgeclient.management.edge_command import EdgeCommand


class Command(EdgeCommand):
    module = pair
