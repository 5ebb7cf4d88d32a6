"""What the demo makes before anything runs, made once and reused on the next run.

Everything lives under DATA_DIR/demo: the admin's generated password and the edge's
ingest token (both 0600: secrets, readable only by the user who ran the demo), the
edge spool, the meter's certificates and the processes' logs.

The ingest token is kept, not re-issued: the raw value is shown once by design, and a
demo that issued a token per run would pile up live tokens nobody can use. A stored
token that no longer works (revoked in the admin, or a database wiped by hand) is
replaced: the device's other demo tokens are revoked and one new token is issued.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from demo import history
from edgeclient.household import MeterModel
from telemetry.models import Device, DeviceToken, Sample
from telemetry.tokens import find_active_token, issue_token

ADMIN_USERNAME = "admin"
DEVICE_ID = "demo-p1"
TOKEN_LABEL = "demo edge"  # noqa: S105 - a label, not a secret
PASSWORD_BYTES = 18
SECRET_MODE = 0o600


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @classmethod
    def under(cls, data_dir: Path) -> DemoPaths:
        return cls(Path(data_dir) / "demo")

    @property
    def password_file(self) -> Path:
        return self.root / "admin-password"

    @property
    def token_file(self) -> Path:
        return self.root / "ingest-token"

    @property
    def spool(self) -> Path:
        return self.root / "edge-spool.sqlite3"

    @property
    def cert_dir(self) -> Path:
        return self.root / "simulator"

    @property
    def seed_file(self) -> Path:
        return self.root / "seed"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def create(self) -> None:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)


def write_secret(path: Path, value: str) -> None:
    """Write a secret readable only by its owner, never briefly readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_MODE)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    os.chmod(path, SECRET_MODE)  # an older file may have had wider permissions


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_admin(paths: DemoPaths) -> tuple[str, str]:
    """The demo superuser and its password: generated on the first run, then reused.
    If the user or the password file went missing, a new password is set and stored."""
    user_model = get_user_model()
    password = read_secret(paths.password_file)
    user = user_model.objects.filter(username=ADMIN_USERNAME).first()
    if user is not None and password is not None and user.check_password(password):
        return ADMIN_USERNAME, password
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    with transaction.atomic():
        if user is None:
            user_model.objects.create_superuser(ADMIN_USERNAME, password=password)
        else:
            user.set_password(password)
            user.is_staff = user.is_superuser = user.is_active = True
            user.save()
        write_secret(paths.password_file, password)
    return ADMIN_USERNAME, password


def ensure_device(owner_username: str) -> Device:
    owner = get_user_model().objects.get(username=owner_username)
    device, _ = Device.objects.get_or_create(
        device_id=DEVICE_ID, defaults={"name": "Demo household", "owner": owner}
    )
    return device


def ensure_ingest_token(device: Device, paths: DemoPaths) -> str:
    """The edge's ingest token: the stored one while it still works, else a new one."""
    raw = read_secret(paths.token_file)
    if raw is not None:
        token = find_active_token(raw)
        if token is not None and token.device_id == device.pk and "ingest" in token.scopes:
            return raw
    with transaction.atomic():
        DeviceToken.objects.filter(
            device=device, label=TOKEN_LABEL, revoked_at__isnull=True
        ).update(revoked_at=timezone.now())
        _, raw = issue_token(device, "ingest", label=TOKEN_LABEL)
        write_secret(paths.token_file, raw)
    return raw


def meter_registers(seed: int, now: datetime) -> history.Registers:
    """The registers simulate_p1 --seed shows at ``now``: the history ends on them, so
    the first live quarter does not jump."""
    telegram = MeterModel(seed, int(now.timestamp())).telegram(int(now.timestamp()))
    return history.Registers(*telegram.import_kwh, *telegram.export_kwh)


# simulate_p1 --seed N is the same meter on every run: at a stored sample's time it shows
# that sample's registers, to within the coarse pre-roll's rounding (well under 1 kWh a
# month). Another seed is another meter, thousands of kWh away.
SAME_METER_KWH = 5.0


def is_this_meter(stored: history.Registers, seed: int, at: datetime) -> bool:
    """Whether registers stored at ``at`` are what simulate_p1 --seed showed then."""
    shown = meter_registers(seed, at)
    return all(
        abs(a - b) <= SAME_METER_KWH for a, b in zip(stored.values(), shown.values(), strict=True)
    )


@dataclass(frozen=True)
class HistoryResult:
    inserted: int
    start: datetime | None  # None: nothing was missing
    # The stored history is another meter's (another --seed): the live meter starts a
    # new register segment (telemetry.segments) instead of being bridged to.
    meter_changed: bool = False


def ensure_history(device: Device, *, now: datetime, months: int, seed: int) -> HistoryResult:
    """First run: ``months`` of history up to now. Later runs: only the gap since the
    newest stored sample (the demo was stopped for a while), or nothing."""
    # The history's last sample sits on its grid at or before now; it must show what the
    # meter shows at that very second.
    grid_end = datetime.fromtimestamp(
        int(now.timestamp()) // history.STEP_S * history.STEP_S, now.tzinfo
    )
    live = meter_registers(seed, grid_end)
    newest = Sample.objects.filter(device=device).order_by("-ts").first()
    if newest is None:
        start = history.history_start(now, months, ZoneInfo(device.timezone))
        inserted = history.backfill(device, end=now, start=start, seed=seed, at_end=live)
        return HistoryResult(inserted, start)
    if now - newest.ts < timedelta(seconds=history.STEP_S):
        return HistoryResult(0, None)
    before = history.Registers.of_sample(newest)
    # The gap is bridged to the live registers only when both are this meter's and
    # they rose. Another seed is another meter: bridging would invent the difference
    # between two meters as consumption (a 30,000 kW "peak"). A meter restarted in a
    # later month counts from lower registers (simulate_p1 models the month so far).
    # Then the gap continues the stored registers, and the live meter's first reading
    # starts a new register segment at the server: nothing is counted across the step.
    same_meter = is_this_meter(before, seed, newest.ts)
    rising = all(b <= a for b, a in zip(before.values(), live.values(), strict=True))
    inserted = history.backfill(
        device,
        end=now,
        start=newest.ts + timedelta(seconds=1),
        seed=seed,
        before=before,
        at_end=live if same_meter and rising else None,
    )
    return HistoryResult(inserted, newest.ts, meter_changed=not same_meter)


def claim_seed(paths: DemoPaths, seed: int) -> int | None:
    """Record which household (--seed) this data directory holds; returns the other
    seed when it already holds another one (the caller refuses: two households' meters
    in one device's history would be read as one)."""
    try:
        held = int(paths.seed_file.read_text().strip())
    except FileNotFoundError:
        paths.seed_file.write_text(f"{seed}\n")
        return None
    except ValueError:
        held = None
    if held is None:
        paths.seed_file.write_text(f"{seed}\n")
        return None
    return None if held == seed else held
