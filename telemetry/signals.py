"""Signals other apps listen to, so telemetry does not import them."""

from django.dispatch import Signal

# Sent after a batch added rows, inside the ingest request, with device_pk and the
# oldest and newest ts of the batch. Receivers keep derived tables current.
samples_ingested = Signal()
