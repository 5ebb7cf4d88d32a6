from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save, pre_migrate


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        from telemetry.models import Device, DeviceToken
        from telemetry.token_cache import bump_generation

        # Any change to a token (revocation above all) or to its device (time zone,
        # owner) must reach the next request in every process.
        for model in (DeviceToken, Device):
            uid = f"token-cache-{model.__name__}"
            post_save.connect(bump_generation, sender=model, dispatch_uid=uid)
            post_delete.connect(bump_generation, sender=model, dispatch_uid=uid)

        # Migrations can change a database's storage plan (the hypertable); a process
        # that migrates (the test runner, a deploy script) chooses again afterwards.
        pre_migrate.connect(_forget_storage_plan, dispatch_uid="storage-plan-pre-migrate")
        post_migrate.connect(_forget_storage_plan, dispatch_uid="storage-plan-post-migrate")

        # A misnamed ingest step stops start-up, not the first batch (which would roll
        # back and be retried by the edge for ever).
        from telemetry import pipeline

        pipeline.steps()


def _forget_storage_plan(sender: object, using: str = "default", **kwargs: Any) -> None:
    from telemetry.storage import forget

    forget(using)
