"""Voxmesh guardrails service: inline input and output checks with cheap rules."""
