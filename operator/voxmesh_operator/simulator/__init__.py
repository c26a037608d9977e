"""A pool simulator: the real planner against a simulated cluster (``voxmesh-operator simulate``).

It answers "how big a buffer, and what does it cost?" before a pool meets real callers. The
policy is not modelled: every reconcile calls the operator's own
:func:`~voxmesh_operator.planning.plan_pool`, unchanged, and applies its plan. Only the world
around it is simulated (:mod:`.model`), in fixed time steps (0.25 s by default):

* **Calls** arrive as a Poisson stream plus bursts (``burst_size`` calls within
  ``burst_spread_s`` every ``burst_every_s``). Call lengths are lognormal with a given mean.
  Arrivals and lengths come from their own seeded random streams, so every buffer compared
  under one seed gets exactly the same calls.
* **Dispatch**: a call goes to a warm, non-draining worker with free capacity
  (``maxSessionsPerWorker``), drawn at random whatever its template, as the NATS queue group
  does. If there is none, the call waits in a FIFO queue until a worker is free. Such a call
  is a *cold wait*, and its wait is recorded. A real edge answers 503 and the caller retries.
  The queue stands in for those retries. The planner never sees waiting calls, just as the
  real operator never sees a 503.
* **Pods**: a created pod is *warming* until its start delay has passed (gamma distributed
  around ``start_delay_s``; scheduling, image and model connections in one figure). Then it
  is *idle*, *busy* with calls, or *draining*.
* **Reconcile** (every ``reconcile_interval_s``): each pod becomes a
  :class:`~voxmesh_operator.planning.WorkerView`, as :mod:`voxmesh_operator.reconcile` builds
  it. That view has the heartbeat's state and session count, the template hash label,
  ``created_at``, and the drain annotation's ``drain_requested_at``. Workers beat on every
  change, so the view is never stale. The plan is then applied in the operator's order:
  drains, deletes, creates. A drained worker leaves dispatch at once, and its calls go on.
* **Drain timeout**: a draining worker ends the calls still running ``drainTimeoutSeconds``
  after the drain request, as the real worker's timer does. Those calls are *cut*. The
  planner deletes the pod once it reports no calls. If it ever deletes a pod that still has
  calls, those calls are cut too, and counted apart (``pod deleted``).
* **Rollout**: at ``rollout_at_s`` the template hash changes. The rollout is complete once
  no pod of the old template is left.

A run starts from a settled pool. The planner first creates and warms the initial pool with no
calls, and that warm-up is not measured. A report (:class:`.model.SimulationReport`) holds the
cold waits (count, p50/p95/max), the cut calls by cause, the worker-seconds per state (the
idle ones are the buffer's cost), the peak pod count, the planner's creations and deletions,
and a per-second timeline. :mod:`.report` draws that timeline as an SVG and tabulates the
runs. :mod:`.cli` is the command.

What it leaves out: API and watch latency; a call landing on a worker in the instant between
the reconcile that saw it idle and the delete; pod failures; node capacity.
"""
