"""The LiveKit edge: a livekit-agents worker that bridges LiveKit rooms to Voxmesh workers.

LiveKit's server dispatches a job per room to this edge (by agent name); the edge joins the
room, subscribes to the caller's audio, publishes the agent's audio and runs the call through
the same call core (:mod:`voxmesh_edge.call`) as the WebRTC and WebSocket edges. See
``docs/livekit.md``.

Modules: :mod:`.frames` (audio conversion), :mod:`.bridge` (the call transport), :mod:`.job`
(one job), :mod:`.capacity` (admission and load), :mod:`.worker` (the agent server and drain),
:mod:`.settings`.
"""
