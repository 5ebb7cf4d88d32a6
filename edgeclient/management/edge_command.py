"""The manage.py form of the edge's commands: thin wrappers around edgeclient.cli.

``manage.py run_edge`` and ``python -m edgeclient run`` run the same function with the
same options; only the errors are Django's here (manage.py prints them the same way).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from edgeclient import cli
from edgeclient.config import ConfigError


class EdgeCommand(BaseCommand):
    """Runs ``module.handle`` (an edgeclient.cli command module)."""

    module: ModuleType
    # The edge runs without the server's apps: the URL check would import DRF.
    requires_system_checks: list[str] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.help = cls.module.HELP

    def add_arguments(self, parser: CommandParser) -> None:
        self.module.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            code = self.module.handle(options, self.stdout)
        except ConfigError as exc:
            raise CommandError(str(exc), returncode=2) from None
        except cli.CommandError as exc:
            raise CommandError(str(exc), returncode=exc.returncode) from exc
        if code:
            raise SystemExit(code)
