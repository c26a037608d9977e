"""Voxmesh shared runtime: config, logging, gRPC and NATS plumbing, audio utilities, CLI."""

__version__ = "0.1.0"
