"""Voxmesh LLM orchestration service."""
