"""Voxmesh speech-to-text service."""
