"""Voxmesh edge: callers over WebRTC (aiortc) or WebSocket, bridged to agent workers on NATS."""
