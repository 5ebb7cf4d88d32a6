"""The storage plan is chosen in one place, once per database, and chosen again after
migrations (which may change it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.management import call_command

from telemetry.storage import forget, plan_for
from tests.layout import APP_PACKAGES

ROOT = Path(__file__).resolve().parent.parent.parent
STORAGE = ROOT / "telemetry" / "storage"
_VENDOR = re.compile(r"\.vendor\b")


def test_no_code_outside_the_storage_package_asks_which_database_it_talks_to():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for package in sorted(APP_PACKAGES)
        for path in sorted((ROOT / package).rglob("*.py"))
        if STORAGE not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if _VENDOR.search(line)
    ]
    assert found == []


def test_the_storage_package_asks_at_most_twice():
    asks = [
        line
        for path in STORAGE.rglob("*.py")
        for line in path.read_text().splitlines()
        if _VENDOR.search(line)
    ]
    assert 1 <= len(asks) <= 2, asks


@pytest.mark.django_db
def test_the_plan_is_chosen_once_per_database():
    plan = plan_for()
    assert plan_for() is plan
    assert plan_for("default") is plan


@pytest.mark.django_db(transaction=True)
def test_migrating_in_the_same_process_chooses_again():
    before = plan_for()
    call_command("migrate", verbosity=0, interactive=False)
    after = plan_for()
    assert after is not before
    assert type(after) is type(before)


@pytest.mark.django_db
def test_forgetting_chooses_the_same_plan_again():
    before = plan_for()
    forget()
    assert plan_for() is not before
    assert plan_for().name == before.name
