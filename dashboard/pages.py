"""What a dashboard page needs besides the API: which devices, and the device's today.

Pure helpers (no request, no clock of their own), so tests call them directly.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from django.db.models import QuerySet

from peakguard.models import PeakGuard
from telemetry.models import Device

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# Live power and the quarter gauge refresh this often (the issue asks for <= 5 s).
LIVE_REFRESH_MS = 2000
MONTH_TABLE_MONTHS = 13


def devices_for(user: User) -> QuerySet[Device]:
    """The devices a logged-in user may see: their own; staff see every device."""
    devices = Device.objects.order_by("device_id")
    return devices if user.is_staff else devices.filter(owner=user)


def pick_device(devices: QuerySet[Device], wanted: str | None) -> Device | None:
    """The device asked for (None when it is not among ``devices``), else the first."""
    if wanted:
        return devices.filter(device_id=wanted).first()
    return devices.first()


def shown_day(text: str | None, today: date) -> date:
    """The day the day view opens on: ?day=YYYY-MM-DD when valid and not in the future."""
    try:
        day = date.fromisoformat(text or "")
    except ValueError:
        return today
    return min(day, today)


def page_config(device: Device, now: datetime, day: str | None = None) -> dict:
    """The settings the page's script reads (via json_script): ids, URLs, the local day."""
    local = now.astimezone(ZoneInfo(device.timezone))
    return {
        "device_id": device.device_id,
        "timezone": device.timezone,
        "today": local.date().isoformat(),
        "day": shown_day(day, local.date()).isoformat(),
        "month": f"{local.year:04d}-{local.month:02d}",
        "live_refresh_ms": LIVE_REFRESH_MS,
        "month_table_months": MONTH_TABLE_MONTHS,
        "target_kw": _target_kw(device),
        "api": {
            "realtime": "/v1/realtime",
            "month": "/v1/capacity/month/",
            "months": "/v1/capacity/months",
            "reconciliation": "/v1/capacity/reconciliation",
            "quarters": "/v1/capacity/quarters",
            "series": "/v1/series",
        },
    }


def _target_kw(device: Device) -> float | None:
    """The household's own goal for the month's peak (its peak guard), if it set one."""
    guard = PeakGuard.objects.filter(device=device, enabled=True).first()
    return None if guard is None else guard.target_kw
