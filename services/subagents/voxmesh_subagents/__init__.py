"""Voxmesh subagents: slow inference tasks run off the conversation path, on a JetStream queue."""
