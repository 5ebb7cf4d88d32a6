"""The edge-only install lives in p1common.edge_install (bench/ uses it too)."""

from p1common.edge_install import EdgeInstall, build_edge_install, locked_edge_requirements

__all__ = ["EdgeInstall", "build_edge_install", "locked_edge_requirements"]
