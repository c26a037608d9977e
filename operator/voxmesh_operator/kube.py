"""A small async Kubernetes client for the few writes the operator makes.

kopf watches and patches AgentPools itself; pods and disruption budgets are written here, over
the same credentials kopf logs in with (:class:`kopf.ConnectionInfo`). API errors become
:class:`ApiError` with the server's reason, and :func:`as_handler_error` turns them into kopf's
retry semantics: conflicts, throttling and server errors are temporary, invalid objects are
permanent.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import kopf

MERGE_PATCH = "application/merge-patch+json"
#: Strategic merge merges lists by key: a pod's status conditions by ``type``.
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A Kubernetes API request failed.

    Attributes:
        status: HTTP status code.
        reason: The Status object's ``reason`` (``AlreadyExists``, ``NotFound``, ``Invalid``…).
        message: The server's message.
    """

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def as_handler_error(error: ApiError, what: str) -> kopf.TemporaryError | kopf.PermanentError:
    """The kopf error for a failed API call: retry unless retrying cannot help."""
    if error.status in (400, 403, 422):
        return kopf.PermanentError(f"{what}: {error}")
    return kopf.TemporaryError(f"{what}: {error}", delay=2 if error.status == 409 else 5)


def pods_path(namespace: str, name: str = "") -> str:
    """REST path of a namespace's pods, or of one pod."""
    return f"/api/v1/namespaces/{namespace}/pods" + (f"/{name}" if name else "")


def pdbs_path(namespace: str, name: str = "") -> str:
    """REST path of a namespace's PodDisruptionBudgets, or of one."""
    return (f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets"
            + (f"/{name}" if name else ""))


class KubeClient:
    """Creates, patches and deletes objects on one API server.

    Args:
        login: Returns the connection to use; called again after a 401, so that rotated
            service-account tokens are picked up.
    """

    def __init__(self, login: Callable[[], kopf.ConnectionInfo]) -> None:
        self._login = login
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Closes the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POSTs ``body`` to a collection ``path``."""
        return await self._request("POST", path, json=body)

    async def patch(self, path: str, body: Mapping[str, Any],
                    content_type: str = MERGE_PATCH) -> dict[str, Any]:
        """PATCHes the object at ``path``."""
        return await self._request("PATCH", path, json=body,
                                   headers={"Content-Type": content_type})

    async def delete(self, path: str, grace_period_s: int | None = None) -> None:
        """Deletes the object at ``path``; an object already gone is not an error."""
        body = None if grace_period_s is None else {"gracePeriodSeconds": grace_period_s}
        try:
            await self._request("DELETE", path, json=body)
        except ApiError as error:
            if error.status != 404:
                raise

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        for attempt in (1, 2):
            session = await self._session_for_request()
            assert self._info is not None
            async with session.request(method, self._info.server.rstrip("/") + path,
                                       **kwargs) as response:
                if response.status == 401 and attempt == 1:
                    await self.close()  # log in again: the token may have rotated
                    continue
                payload: Any = await response.json(content_type=None) \
                    if response.content_length != 0 else {}
                if response.status >= 400:
                    payload = payload if isinstance(payload, dict) else {}
                    raise ApiError(response.status, str(payload.get("reason", response.reason)),
                                   str(payload.get("message", "")))
                return payload if isinstance(payload, dict) else {}
        raise AssertionError("unreachable")

    async def _session_for_request(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._info = info = self._login()
            headers = {}
            if info.token:
                headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
            auth = (aiohttp.BasicAuth(info.username, info.password or "")
                    if info.username else None)
            self._session = aiohttp.ClientSession(
                headers=headers, auth=auth, connector=aiohttp.TCPConnector(ssl=_ssl(info)),
                timeout=aiohttp.ClientTimeout(total=30))
        return self._session


def _ssl(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    """TLS settings from a kubeconfig or service account (``*_data`` fields are base64)."""
    if not info.server.startswith("https") or info.insecure:
        return False
    ca_data = base64.b64decode(info.ca_data).decode() if info.ca_data else None
    context = ssl.create_default_context(cafile=_path(info.ca_path), cadata=ca_data)
    certificate, key = _path(info.certificate_path), _path(info.private_key_path)
    if info.certificate_data and info.private_key_data:
        # ssl only loads client certificates from files: write them where only we can read.
        folder = Path(tempfile.mkdtemp(prefix="voxmesh-operator-"))
        certificate, key = str(folder / "client.crt"), str(folder / "client.key")
        for target, data in ((certificate, info.certificate_data),
                             (key, info.private_key_data)):
            Path(target).write_bytes(base64.b64decode(data))
            os.chmod(target, 0o600)
    if certificate and key:
        context.load_cert_chain(certificate, key)
    return context


def _path(value: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None) -> str | None:
    return os.fsdecode(value) if value else None
