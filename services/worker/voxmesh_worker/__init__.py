"""Voxmesh agent worker: the session runtime, one per call."""
