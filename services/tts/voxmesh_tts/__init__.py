"""Voxmesh text-to-speech service."""
