"""The Voxmesh operator: warm pools of agent workers that drain instead of cutting calls.

An ``AgentPool`` (``voxmesh.dev/v1alpha1``) owns its worker pods directly, the way Agones owns
game servers. Workers report their state on NATS; the operator keeps ``busy + buffer`` workers,
mirrors each worker's state to its pod (labels, a readiness gate, eviction protection), and
retires old workers by draining them. The planning logic is pure (:mod:`.planning`) and is
shared by the kopf handlers (:mod:`.main`) and the simulator (:mod:`.simulator`).
"""
