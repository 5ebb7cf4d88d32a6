"""Helpers every server app may use: problem+json, OpenAPI pieces, environment readers,
child processes. Imports no app of ours (tests/test_architecture.py holds that)."""
