"""The Kubernetes API calls for people's agents, and nothing more.

Knative Services (``serving.knative.dev/v1``) go through httpx (the official client has
no typed Knative API); PersistentVolumeClaims and the agents' token Secrets through the
official ``kubernetes`` client (synchronous: run in a thread). Every object read back is
validated into the small typed views below; every refusal of the API server is a
:class:`ClusterError` carrying its ``Status`` (code, reason, message), and a server that
cannot be reached is one too (code 0, reason ``Unreachable``).

Access: ``knative.api_server`` or, in the cluster, ``KUBERNETES_SERVICE_HOST``/``_PORT``;
the ServiceAccount's token from ``knative.token_file`` (re-read every minute: projected
tokens rotate) and the API server's CA from ``knative.ca_file``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import kubernetes.client as k8s
import urllib3
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from dexorder.config import ConfigError, KnativeConfig

T = TypeVar("T")

KSVC_API = "/apis/serving.knative.dev/v1"
#: Calls other than watches give up after this long.
CALL_TIMEOUT_S = 15.0
_TOKEN_REREAD_S = 60.0


class _Read(BaseModel):
    """A view of what the API server sent: camelCase, unknown fields ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class StatusDetails(_Read):
    name: str | None = None
    kind: str | None = None


class Status(_Read):
    """The API server's ``Status`` (its error answers)."""

    kind: Literal["Status"] = "Status"
    status: str | None = None
    message: str = ""
    reason: str = ""
    code: int = 0
    details: StatusDetails | None = None


class ClusterError(Exception):
    """The API server refused a call (``code`` its HTTP status) or could not be reached
    (``code`` 0)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message = code, reason, message

    @classmethod
    def from_body(cls, code: int, body: str | bytes | None) -> ClusterError:
        try:
            status = Status.model_validate_json(body or b"")
        except ValidationError:
            text = (body.decode(errors="replace") if isinstance(body, bytes) else body) or ""
            return cls(code, "Unknown", text.strip()[:300] or "no message")
        return cls(status.code or code, status.reason or "Unknown", status.message)


class Meta(_Read):
    name: str
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    deletion_timestamp: str | None = None


class Condition(_Read):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None


class Address(_Read):
    url: str | None = None


class ServiceStatus(_Read):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    url: str | None = None
    address: Address | None = None


class _ContainerView(_Read):
    image: str | None = None


class _RevisionSpecView(_Read):
    containers: list[_ContainerView] = Field(default_factory=list)


class _TemplateMetaView(_Read):
    # Knative answers with ``creationTimestamp: null`` and more here: only these are read
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class _TemplateView(_Read):
    metadata: _TemplateMetaView = _TemplateMetaView()
    spec: _RevisionSpecView = _RevisionSpecView()


class _ServiceSpecView(_Read):
    template: _TemplateView = _TemplateView()


class KService(_Read):
    """What the provisioner and the sweeper read of a Knative Service."""

    metadata: Meta
    spec: _ServiceSpecView = _ServiceSpecView()
    status: ServiceStatus = ServiceStatus()

    @property
    def image(self) -> str | None:
        containers = self.spec.template.spec.containers
        return containers[0].image if containers else None


class _ServiceList(_Read):
    items: list[KService]


class Labelled(_Read):
    """What the sweeper reads of a PVC: its name, uid, labels and annotations."""

    metadata: Meta


class WatchEvent(_Read):
    type: Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]
    object: dict[str, Any]  # validated into KService or Status at once, by type


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], content: bytes) -> M:
    """The API server's answer as ``model``; one it cannot be read as is a
    :class:`ClusterError` (502), never a crash."""
    try:
        return model.model_validate_json(content)
    except ValidationError as exc:
        raise ClusterError(502, "BadResponse", f"unexpected answer: {exc}") from None


def server_url(cfg: KnativeConfig) -> str:
    if cfg.api_server:
        return cfg.api_server.rstrip("/")
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
    )
    if not host:
        raise ConfigError("knative.api_server is not set and this is not a cluster pod")
    return f"https://{host}:{port}"


class Cluster:
    """The API calls of the provisioner and the sweeper, in ``cfg.namespace``."""

    def __init__(self, cfg: KnativeConfig) -> None:
        self.cfg = cfg
        self.namespace = cfg.namespace
        self.server = server_url(cfg)
        self._token: tuple[float, str] | None = None
        verify: str | bool = cfg.ca_file if cfg.ca_file and Path(cfg.ca_file).is_file() else True
        self.http = httpx.AsyncClient(
            base_url=self.server, verify=verify, timeout=CALL_TIMEOUT_S, auth=self._auth
        )
        conf = k8s.Configuration()
        conf.host = self.server
        conf.retries = False  # a refusal is answered at once, not retried by urllib3
        if isinstance(verify, str):
            conf.ssl_ca_cert = verify
        self._conf = conf
        self._api_client = k8s.ApiClient(conf)
        self.core = k8s.CoreV1Api(self._api_client)

    # --- access -----------------------------------------------------------------------

    def _bearer(self) -> str:
        now = time.monotonic()
        if self._token is None or now - self._token[0] > _TOKEN_REREAD_S:
            try:
                token = Path(self.cfg.token_file).read_text().strip()
            except OSError:
                token = ""
            self._token = (now, token)
        return f"Bearer {self._token[1]}" if self._token[1] else ""

    def _auth(self, request: httpx.Request) -> httpx.Request:
        bearer = self._bearer()
        if bearer:
            request.headers["Authorization"] = bearer
        return request

    async def close(self) -> None:
        await self.http.aclose()
        await asyncio.to_thread(self._api_client.close)

    # --- Knative Services (httpx) ---------------------------------------------------

    def _ksvc(self, name: str | None = None) -> str:
        base = f"{KSVC_API}/namespaces/{self.namespace}/services"
        return f"{base}/{name}" if name else base

    async def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            r = await self.http.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise ClusterError(0, "Unreachable", f"{self.server}: {exc!r}") from None
        if r.status_code >= 400:
            raise ClusterError.from_body(r.status_code, r.content)
        return r

    async def create_service(self, manifest: dict[str, Any]) -> KService:
        r = await self._call("POST", self._ksvc(), json=manifest)
        return parse(KService, r.content)

    async def get_service(self, name: str) -> KService:
        r = await self._call("GET", self._ksvc(name))
        return parse(KService, r.content)

    async def patch_service(self, name: str, merge_patch: dict[str, Any]) -> KService:
        r = await self._call(
            "PATCH",
            self._ksvc(name),
            content=json.dumps(merge_patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        return parse(KService, r.content)

    async def list_services(self, selector: str) -> list[KService]:
        r = await self._call("GET", self._ksvc(), params={"labelSelector": selector})
        return parse(_ServiceList, r.content).items

    async def delete_service(self, name: str, uid: str) -> None:
        """Delete ``name`` only if it is still the object ``uid`` (not one made since)."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}
        await self._call("DELETE", self._ksvc(name), json=body)

    async def watch_service(
        self, name: str, resource_version: str | None, timeout_s: float
    ) -> AsyncGenerator[tuple[str, KService], None]:
        """Changes of ``name`` after ``resource_version``, until ``timeout_s`` (the server
        ends the watch then); an ``ERROR`` event raises its Status (410: start again)."""
        params: dict[str, str | int] = {
            "watch": "true",
            "fieldSelector": f"metadata.name={name}",
            "timeoutSeconds": max(1, int(timeout_s + 0.999)),
        }
        if resource_version:
            params["resourceVersion"] = resource_version
        timeout = httpx.Timeout(CALL_TIMEOUT_S, read=timeout_s + 5)
        try:
            async with self.http.stream("GET", self._ksvc(), params=params, timeout=timeout) as r:
                if r.status_code >= 400:
                    raise ClusterError.from_body(r.status_code, await r.aread())
                async for line in r.aiter_lines():
                    if not line.strip():
                        continue
                    event = parse(WatchEvent, line.encode())
                    if event.type == "ERROR":
                        status = parse(Status, json.dumps(event.object).encode())
                        raise ClusterError(status.code, status.reason, status.message)
                    if event.type == "BOOKMARK":
                        continue
                    yield event.type, parse(KService, json.dumps(event.object).encode())
        except httpx.TransportError as exc:
            raise ClusterError(0, "Unreachable", f"{self.server}: {exc!r}") from None

    # --- PVCs and Secrets (the kubernetes client) -------------------------------------

    async def _core(self, call: Callable[[], T]) -> T:
        bearer = self._bearer()  # the token as it is now (it rotates)
        self._conf.api_key = {"authorization": bearer} if bearer else {}
        try:
            return await asyncio.to_thread(call)
        except ApiException as exc:
            raise ClusterError.from_body(exc.status or 0, exc.body) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterError(0, "Unreachable", f"{self.server}: {exc!r}") from None

    async def get_pvc(self, name: str) -> Labelled:
        pvc = await self._core(
            lambda: self.core.read_namespaced_persistent_volume_claim(
                name, self.namespace, _request_timeout=CALL_TIMEOUT_S
            )
        )
        return _labelled(pvc)

    async def create_pvc(self, manifest: dict[str, Any]) -> Labelled:
        pvc = await self._core(
            lambda: self.core.create_namespaced_persistent_volume_claim(
                self.namespace,
                k8s.V1PersistentVolumeClaim.model_validate(manifest),
                _request_timeout=CALL_TIMEOUT_S,
            )
        )
        return _labelled(pvc)

    async def list_pvcs(self, selector: str) -> list[Labelled]:
        found = await self._core(
            lambda: self.core.list_namespaced_persistent_volume_claim(
                self.namespace, label_selector=selector, _request_timeout=CALL_TIMEOUT_S
            )
        )
        return [_labelled(p) for p in found.items]

    async def delete_pvc(self, name: str, uid: str) -> None:
        body = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=uid))
        await self._core(
            lambda: self.core.delete_namespaced_persistent_volume_claim(
                name, self.namespace, body=body, _request_timeout=CALL_TIMEOUT_S
            )
        )

    async def put_secret(self, manifest: dict[str, Any]) -> None:
        """Create the Secret, or replace it whole if it exists (never read: the gateway
        may write the agents' token Secrets but not read any Secret)."""
        name = manifest["metadata"]["name"]
        secret = k8s.V1Secret.model_validate(manifest)
        try:
            await self._core(
                lambda: self.core.create_namespaced_secret(
                    self.namespace, secret, _request_timeout=CALL_TIMEOUT_S
                )
            )
        except ClusterError as exc:
            if exc.code != 409:
                raise
            await self._core(
                lambda: self.core.replace_namespaced_secret(
                    name, self.namespace, secret, _request_timeout=CALL_TIMEOUT_S
                )
            )

    async def delete_secret(self, name: str) -> None:
        await self._core(
            lambda: self.core.delete_namespaced_secret(
                name, self.namespace, _request_timeout=CALL_TIMEOUT_S
            )
        )


def _labelled(obj: Any) -> Labelled:
    meta = obj.metadata
    return Labelled(
        metadata=Meta(
            name=meta.name,
            namespace=meta.namespace,
            uid=meta.uid,
            resource_version=meta.resource_version,
            labels=meta.labels or {},
            annotations=meta.annotations or {},
            deletion_timestamp=str(meta.deletion_timestamp) if meta.deletion_timestamp else None,
        )
    )


async def ignoring_not_found(call: Awaitable[None]) -> bool:
    """Run a deletion; False if the object was already gone."""
    try:
        await call
    except ClusterError as exc:
        if exc.code == 404:
            return False
        raise
    return True
