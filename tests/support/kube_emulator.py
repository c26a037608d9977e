"""kmock's Kubernetes emulator, with the object metadata a real API server maintains.

kmock 0.8 stores objects as sent. kopf needs what the API server adds (uid, resourceVersion,
namespace, creationTimestamp, generation), and answers a failed JSON-patch ``test`` with 422
(kopf's "conflict, retry"), which kmock reports as 500.
"""

from __future__ import annotations

import datetime
import itertools
import uuid
from typing import Any

import jsonpatch
import kmock

_RESOURCE_VERSIONS = itertools.count(1000)


class ApiServerLikeEmulator(kmock.KubernetesEmulator):
    """Fills in server-side metadata on create and update."""

    async def _handle(self, request: Any) -> Any:
        data = request.data  # the same dict the emulator stores or merges
        if request.resource is not None and request.action == kmock.action.CREATE and \
                isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.namespace:
                meta.setdefault("namespace", request.namespace)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp",
                            datetime.datetime.now(datetime.UTC).isoformat())
            meta["resourceVersion"] = str(next(_RESOURCE_VERSIONS))
            meta["generation"] = 1
        elif request.resource is not None and request.action == kmock.action.UPDATE and \
                request.name:
            key = (request.resource, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                old = self.objects[key].get("metadata", {})
                spec_changed = request.subresource is None and (
                    "spec" in data if isinstance(data, dict) else
                    any(op.get("path", "").startswith("/spec") for op in data))
                new = {"resourceVersion": str(next(_RESOURCE_VERSIONS))}
                if spec_changed:
                    new["generation"] = int(old.get("generation", 0)) + 1
                if isinstance(data, dict):
                    data.setdefault("metadata", {}).update(new)
                elif isinstance(data, list):
                    data.extend({"op": "add", "path": f"/metadata/{k}", "value": v}
                                for k, v in new.items())
        return await super()._handle(request)

    async def _render_error(self, exc: Exception) -> Any:
        if isinstance(exc, jsonpatch.JsonPatchException):
            exc = kmock.KubernetesError(status=422, reason="Invalid", message=str(exc))
        return await super()._render_error(exc)
