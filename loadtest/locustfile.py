r"""Locust entry point: Voxmesh synthetic voice calls as Locust users (:class:`VoiceCallUser`).

One machine, headless (``--host`` is the edge URL; ``--stop-timeout`` lets the calls in flight
at the end finish, so they are measured)::

    locust -f loadtest/locustfile.py --headless -u 20 -r 2 -t 5m --stop-timeout 60 \
        --host http://127.0.0.1:8080 --scenario loadtest/scenarios/smoke.yaml

Distributed: one master, and workers on as many machines as the load needs. Each worker runs
its calls in a helper process of its own, so run about one worker per core (``--processes -1``
forks one per core)::

    locust -f loadtest/locustfile.py --master --expect-workers 8 \
        --autostart --autoquit 10 -u 200 -r 10 -t 10m --stop-timeout 60 \
        --host http://edge.example:8080 --scenario loadtest/scenarios/book-a-table.yaml
    locust -f loadtest/locustfile.py --worker --master-host 10.0.0.5 --processes -1

Workers take ``--scenario``, ``--transport`` and ``--call-wait`` from the master; the scenario
file must exist at that path on every worker machine (a checkout of this repository). On the
master, prefer ``--autostart --autoquit N`` to ``--headless``: a headless master quits without
stopping its workers first, so the calls still in flight are hung up but not counted; with
``--autostart`` it stops them, waits up to ``--stop-timeout`` for their calls, then quits
(meanwhile its web UI is on port 8089).
"""

from voxmesh_loadtest.locust_user import VoiceCallUser, add_arguments

__all__ = ["VoiceCallUser", "add_arguments"]
