"""``status`` (``manage.py edge_status``, ``python -m edgeclient status``): what the
spool says about the edge; a container health check.

Reads only the spool file (EDGE_SPOOL_PATH): it works while the server or the meter is
down, which is exactly when it is asked. Exit 0 healthy, 1 unhealthy, 2 bad config.
"""

from __future__ import annotations

import json
import math
import os
import time
from argparse import ArgumentParser
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeclient.cli import CommandError, Lines
from edgeclient.config import ConfigError, spool_path_from_env
from edgeclient.spool import (
    QUARANTINE_MAX_AGE_S,
    QUARANTINE_MAX_ROWS,
    Spool,
    SpoolError,
    SpoolStatus,
)

# Upload failures that will not heal by waiting: somebody has to fix the configuration.
from edgeclient.uploader import CONFIG_STATES as _CONFIG_STATES

HELP = "Report the edge's spool, quarantine and last upload; exit 1 when unhealthy."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--max-pending-age",
        type=float,
        default=900.0,
        help="seconds a sample may wait in the spool before the edge is unhealthy",
    )
    parser.add_argument(
        "--max-meter-down",
        type=float,
        default=300.0,
        help="seconds the meter may be unreachable before the edge is unhealthy",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--textfile",
        metavar="PATH",
        help="also write the figures as Prometheus metrics to PATH (node_exporter's "
        "textfile collector reads *.prom files; the file is replaced atomically)",
    )


def handle(options: dict[str, Any], out: Lines) -> int:
    """Write the report; 0 when healthy, 1 when not. CommandError (exit 2): bad config."""
    try:
        path = spool_path_from_env()
    except ConfigError as exc:
        raise CommandError(str(exc), returncode=2) from None
    now = time.time()
    try:
        with Spool(path, create=False) as spool:
            status = spool.status()
    except SpoolError as exc:
        return _finish(options, out, {"healthy": False, "problems": [str(exc)]}, [])
    problems = health_problems(status, now, options["max_pending_age"], options["max_meter_down"])
    report = _report(status, now) | {"healthy": not problems, "problems": problems}
    return _finish(options, out, report, _lines(status, now))


def _finish(options: dict, out: Lines, report: dict[str, Any], lines: list[str]) -> int:
    if options.get("textfile"):
        write_textfile(Path(options["textfile"]), textfile_metrics(report))
    if options["json"]:
        out.write(json.dumps(report))
    else:
        for line in lines:
            out.write(line)
        verdict = "healthy" if report["healthy"] else "UNHEALTHY: "
        out.write("status: " + verdict + "; ".join(report["problems"]))
    return 0 if report["healthy"] else 1


# Prometheus text exposition format 0.0.4, written by hand: the edge installs no
# Prometheus library (it must stay small on a Pi); tests parse the file with
# prometheus_client's own parser.
_TEXTFILE_METRICS = (
    ("p1_edge_healthy", "gauge", "1 when edge_status finds the edge healthy.", "healthy"),
    (
        "p1_edge_spool_pending_samples",
        "gauge",
        "Samples in the spool not yet acknowledged.",
        "pending",
    ),
    (
        "p1_edge_spool_oldest_pending_age_seconds",
        "gauge",
        "Seconds the oldest pending sample has waited; 0: none.",
        "oldest_pending_age_s",
    ),
    ("p1_edge_quarantined_samples", "gauge", "Samples kept in the quarantine.", "quarantined"),
    (
        "p1_edge_quarantine_dropped_total",
        "counter",
        "Quarantine rows dropped by its bound.",
        "quarantine_dropped",
    ),
    (
        "p1_edge_upload_consecutive_failures",
        "gauge",
        "Failed uploads since the last success.",
        "consecutive_failures",
    ),
    ("p1_edge_meter_changes_total", "counter", "Meter changes seen.", "meter_changes"),
)


def textfile_metrics(report: dict[str, Any]) -> str:
    """The report's figures as Prometheus text; a figure the report lacks (the spool is
    unreadable) is left out, except p1_edge_healthy."""
    lines = []
    for name, kind, help_text, key in _TEXTFILE_METRICS:
        value = report.get(key)
        if value is None and key == "oldest_pending_age_s" and "pending" in report:
            value = 0
        if value is None:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]
    return "\n".join(lines) + "\n"


def _number(value: float | int | bool) -> str:
    """A sample value in the text format: a count exact however large (``:g`` keeps six
    digits: a spool of 1,234,567 would read 1.23457e+06), a float as its shortest exact
    repr, and the format's spelling of infinities and NaN."""
    if isinstance(value, bool | int):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def write_textfile(path: Path, text: str) -> None:
    """Write then rename, so the collector never reads half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    except OSError as exc:
        raise CommandError(f"--textfile {path}: {exc.strerror or exc}", returncode=2) from None


def health_problems(
    status: SpoolStatus, now: float, max_pending_age_s: float, max_meter_down_s: float
) -> list[str]:
    problems = []
    if status.oldest_spooled_at is not None:
        waiting = now - status.oldest_spooled_at
        if waiting > max_pending_age_s:
            problems.append(
                f"oldest pending sample has waited {waiting:.0f} s (limit {max_pending_age_s:g})"
            )
    if status.upload_state in _CONFIG_STATES:
        problems.append(f"uploads refused ({status.upload_state}): {status.last_error}")
    if status.meter_down_since is not None and now - status.meter_down_since > max_meter_down_s:
        problems.append(
            f"meter unreachable for {now - status.meter_down_since:.0f} s: {status.meter_error}"
        )
    return problems


def _report(status: SpoolStatus, now: float) -> dict[str, Any]:
    return {
        "spool": str(status.path),
        "schema_version": status.schema_version,
        "pending": status.depth,
        "oldest_pending_ts": status.oldest_ts,
        "oldest_pending_age_s": _age(status.oldest_spooled_at, now),
        "quarantined": status.quarantined,
        "last_upload_at": _iso(status.last_upload_at),
        "last_upload_age_s": _age(status.last_upload_at, now),
        "last_upload_count": status.last_upload_count,
        "upload_state": status.upload_state,
        "consecutive_failures": status.consecutive_failures,
        "last_error": status.last_error,
        "last_error_at": _iso(status.last_error_at),
        "meter_error": status.meter_error,
        "meter_down_since": _iso(status.meter_down_since),
        "quarantine_repeats": status.quarantine_repeats,
        "quarantine_dropped": status.quarantine_dropped,
        "quarantine_dropped_at": _iso(status.quarantine_dropped_at),
        "quarantine_max_rows": QUARANTINE_MAX_ROWS,
        "quarantine_max_age_s": QUARANTINE_MAX_AGE_S,
        "dropped_values": _dropped_by_field(status),
        "meter_unique_id": status.meter_unique_id,
        "previous_meter_unique_id": status.previous_meter_unique_id,
        "meter_changes": status.meter_changes,
        "meter_changed_at": _iso(status.meter_changed_at),
        "meter_clock": status.meter_clock,
        "meter_clock_detail": status.meter_clock_detail,
        "meter_clock_since": _iso(status.meter_clock_since),
    }


def _dropped_by_field(status: SpoolStatus) -> dict[str, dict[str, Any]]:
    """{field: {"count": n, "problems": {problem: n}, "last_at": iso}}."""
    fields: dict[str, dict[str, Any]] = {}
    for row in status.dropped_values:
        entry = fields.setdefault(row.field, {"count": 0, "problems": {}, "last_at": None})
        entry["count"] += row.count
        entry["problems"][row.problem] = row.count
        entry["last_at"] = max(entry["last_at"] or "", _iso(row.last_at) or "") or None
    return fields


def _lines(status: SpoolStatus, now: float) -> list[str]:
    age = _age(status.oldest_spooled_at, now)
    lines = [
        f"spool: {status.path} (schema v{status.schema_version})",
        f"pending: {status.depth} samples"
        + (f", oldest {status.oldest_ts} waiting {age:.0f} s" if age is not None else ""),
        _quarantine_line(status),
        _dropped_line(status),
        _meter_clock_line(status),
    ]
    if status.meter_unique_id is not None:
        line = f"meter id: {status.meter_unique_id}"
        if status.meter_changes:
            line += (
                f" (meter changed {status.meter_changes} time"
                f"{'' if status.meter_changes == 1 else 's'}, last at "
                f"{_iso(status.meter_changed_at)}, from {status.previous_meter_unique_id})"
            )
        lines.append(line)
    if status.last_upload_at is None:
        lines.append("last upload: never")
    else:
        lines.append(
            f"last upload: {_iso(status.last_upload_at)} ({_age(status.last_upload_at, now):.0f}"
            f" s ago, {status.last_upload_count} samples)"
        )
    if status.last_error is None:
        lines.append("last error: none")
    else:
        lines.append(
            f"last error: {_iso(status.last_error_at)} {status.last_error} "
            f"(upload state {status.upload_state}, {status.consecutive_failures} failures in a row)"
        )
    if status.meter_down_since is None:
        lines.append("meter: answering")
    else:
        since = _iso(status.meter_down_since)
        lines.append(f"meter: unreachable since {since}: {status.meter_error}")
    return lines


def _quarantine_line(status: SpoolStatus) -> str:
    line = f"quarantine: {status.quarantined} samples"
    if status.quarantine_repeats:
        line += f", {status.quarantine_repeats} repeated refusals folded into them"
    if status.quarantine_dropped:
        line += (
            f"; {status.quarantine_dropped} dropped by the bound ({QUARANTINE_MAX_ROWS} rows, "
            f"{QUARANTINE_MAX_AGE_S / 86400:g} days), last at {_iso(status.quarantine_dropped_at)}"
        )
    return line


def _dropped_line(status: SpoolStatus) -> str:
    fields = _dropped_by_field(status)
    if not fields:
        return "dropped values: none"
    parts = [
        f"{name} {entry['count']} ({', '.join(entry['problems'])})"
        for name, entry in fields.items()
    ]
    return "dropped values (readings kept): " + ", ".join(parts)


def _meter_clock_line(status: SpoolStatus) -> str:
    if status.meter_clock is None:
        return "sample time: not decided yet"
    if status.meter_clock == "meter":
        return "sample time: the meter's timestamps"
    return (
        f"sample time: the edge's clock since {_iso(status.meter_clock_since)} "
        f"({status.meter_clock}: {status.meter_clock_detail})"
    )


def _age(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, now - at), 1)


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
