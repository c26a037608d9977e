"""Voxmesh load tester: synthetic callers over the real edge, measured where a caller hears.

* :mod:`.scenario`: what each call says (YAML scenario files);
* :mod:`.arrivals`: when calls start (constant, ramp, Poisson, burst);
* :mod:`.caller`: one synthetic call over WebRTC or the WebSocket transport, and its
  per-turn measurements;
* :mod:`.runner`: many calls, with live progress;
* :mod:`.report`: JSON and a self-contained HTML report; SLO checks;
* :mod:`.capacity`: the capacity benchmark on latency-model providers;
* :mod:`.locust_user`: the same scenarios under Locust, for distributed load.
"""
