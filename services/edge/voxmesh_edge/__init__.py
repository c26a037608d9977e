"""Voxmesh WebRTC edge: browser callers over WebRTC (aiortc), bridged to agent workers on NATS."""
