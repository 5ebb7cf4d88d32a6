"""The project's settings plus the baseline view the benchmarks compare against."""

from p1platform.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
