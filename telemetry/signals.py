"""Signals other apps listen to, so telemetry does not import them."""

from django.dispatch import Signal

# Sent after a batch added rows, inside the ingest request, with device_pk, the oldest
# and newest ts of the batch, and the device's timezone name when the caller knows it.
# Receivers keep derived tables current.
samples_ingested = Signal()
