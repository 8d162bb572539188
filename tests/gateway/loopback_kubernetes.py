"""A loopback Kubernetes API server for exactly the objects people's agents use.

It speaks the real wire protocol to the real clients (the official ``kubernetes`` client,
httpx): create/get/list/watch/delete (and replace/merge-patch where used) of ``v1``
PersistentVolumeClaims and Secrets and ``serving.knative.dev/v1`` Services in a
namespace; bearer-token access; errors as real ``Status`` bodies (``AlreadyExists``
409, ``NotFound`` 404, ``Forbidden`` 403, ``Invalid`` 422 with causes, ``Conflict`` 409 on
a failed precondition, ``Gone`` 410 in a watch); resource versions, generations, uids.

A created or changed Service is validated like Knative's webhook would (the CRD's schema
with unknown fields refused, the retention annotation within an hour) and becomes Ready
after ``ready_after_s``: its Ready condition goes from ``Unknown`` to ``True`` with its
``status.url`` and ``status.address.url``. ``pod`` (optional) stands in for the pod: it is
called with the Service and returns the address it serves on (the bench starts a real
agent process there). ``never_ready`` keeps named Services ``Unknown`` (or ``False``) with
a reason and message, as a revision that cannot be scheduled would.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
from aiohttp import web

from tests.knative.manifests import crd_validator

_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_RETENTION_S = 3600
Obj = dict[str, Any]

#: (API group, plural, kind) of each resource served, by the path segment naming it.
RESOURCES = {
    ("", "persistentvolumeclaims"): ("PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "secrets"): ("Secret", "secrets"),
    ("serving.knative.dev", "services"): ("Service", "services.serving.knative.dev"),
}


def service_validator() -> Any:
    """The strict validator of Knative's Service CRD (v1), as the manifest tests use it."""
    return crd_validator("serving.knative.dev/v1", "Service")


def _parse_duration_s(text: str) -> float | None:
    """A Go duration (``15m``, ``1h0m0s``, ``90s``) in seconds; None if not one."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s|ms)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        return None
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(a) * unit[b] for a, b in parts)


def knative_problems(obj: Obj) -> list[str]:
    """What Knative's webhook would refuse in a Service (the parts its schema cannot say)."""
    problems = []
    for error in service_validator().iter_errors(obj):
        where = ".".join(str(p) for p in error.absolute_path)
        problems.append(f"{where or '(root)'}: {error.message}")
    name = obj.get("metadata", {}).get("name", "")
    if not _DNS_1035.match(name) or len(name) > 63:
        problems.append(f"metadata.name: Invalid value: {name!r}: not a DNS-1035 label")
    annotations = obj.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
    key = "autoscaling.knative.dev/scale-to-zero-pod-retention-period"
    if key in annotations:
        seconds = _parse_duration_s(str(annotations[key]))
        if seconds is None or not 0 <= seconds <= _MAX_RETENTION_S:
            problems.append(
                f"spec.template.metadata.annotations.{key}: expected 0s <= "
                f"{annotations[key]} <= 1h0m0s"
            )
    return problems


def status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def _selected(obj: Obj, label_selector: str | None, field_selector: str | None) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, (label_selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    for term in filter(None, (field_selector or "").split(",")):
        key, _, value = term.partition("=")
        if key == "metadata.name" and obj["metadata"]["name"] != value:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


@dataclass
class Event:
    rv: int
    resource: str
    namespace: str
    type: str
    obj: Obj


@dataclass
class LoopbackKubernetes:
    """The server; :meth:`start` it, point the clients at :attr:`url` with :attr:`token`."""

    token: str = "loopback-token"
    namespaces: set[str] = field(default_factory=lambda: {"dexorder-agents"})
    ready_after_s: float = 0.05
    pod: Callable[[Obj], Awaitable[str]] | None = None
    #: Service name → (condition status "Unknown" or "False", reason, message)
    never_ready: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: (verb, plural) pairs refused with 403
    forbidden: set[tuple[str, str]] = field(default_factory=set)
    #: watches asking for a resource version below this get 410 Gone
    compacted_below: int = 0
    #: check what is written (off in the bench: the real API server checks in Go, fast;
    #: here the checks would be most of the time measured)
    validate: bool = True
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    #: successful creations and all requests (method, path), for the tests
    created: dict[str, int] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""
    _rv: int = 1
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    _closing: bool = False
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        async with self._changed:
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what the tests look at ---------------------------------------------------

    def get(self, plural: str, name: str, namespace: str = "dexorder-agents") -> Obj | None:
        return self.objects.get((plural, namespace, name))

    def put(self, plural: str, obj: Obj) -> None:
        """Store ``obj`` as it is (an object another party made)."""
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(self._next_rv())
        self.objects[(plural, meta["namespace"], meta["name"])] = obj

    # --- protocol -------------------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    async def _record(self, plural: str, namespace: str, kind: str, obj: Obj) -> None:
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        self.events.append(Event(rv, plural, namespace, kind, copy.deepcopy(obj)))
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        m = re.fullmatch(
            r"/(?:api/v1|apis/(?P<group>[a-z.]+)/v1)/namespaces/(?P<ns>[^/]+)/"
            r"(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?",
            request.path,
        )
        if m is None:
            return status(404, "NotFound", "the server could not find the requested resource")
        group, ns, plural, name = m["group"] or "", m["ns"], m["plural"], m["name"]
        if (group, plural) not in RESOURCES:
            return status(404, "NotFound", "the server could not find the requested resource")
        kind, qualified = RESOURCES[(group, plural)]
        verb = {
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
            "GET": "get" if name else ("watch" if request.query.get("watch") else "list"),
        }.get(request.method)
        if verb is None:
            return status(405, "MethodNotAllowed", f"{request.method} is not supported")
        if (verb, plural) in self.forbidden:
            group_said = f' in API group "{group}"' if group else ' in API group ""'
            return status(
                403,
                "Forbidden",
                f'{qualified} is forbidden: User "system:serviceaccount:dexorder-system:'
                f'dexorder-gateway" cannot {verb} resource "{plural}"{group_said} in the '
                f'namespace "{ns}"',
                group=group,
                kind=plural,
            )
        if ns not in self.namespaces:
            return status(
                404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces"
            )
        if verb == "watch":
            return await self._watch(request, plural, ns)
        if verb == "list":
            items = [
                o
                for (p, n, _), o in sorted(self.objects.items())
                if p == plural
                and n == ns
                and _selected(
                    o, request.query.get("labelSelector"), request.query.get("fieldSelector")
                )
            ]
            return web.json_response(
                {
                    "kind": f"{kind}List",
                    "apiVersion": "serving.knative.dev/v1" if group else "v1",
                    "metadata": {"resourceVersion": str(self._rv)},
                    "items": items,
                }
            )
        if verb == "create":
            return await self._create(request, group, plural, kind, qualified, ns)
        assert name is not None
        key = (plural, ns, name)
        current = self.objects.get(key)
        if current is None:
            return status(
                404,
                "NotFound",
                f'{qualified} "{name}" not found',
                name=name,
                group=group,
                kind=plural,
            )
        if verb == "get":
            return web.json_response(current)
        if verb == "delete":
            return await self._delete(request, plural, qualified, ns, name, current)
        body = await request.json()
        if verb == "update":
            new = {**body, "metadata": {**body["metadata"], "uid": current["metadata"]["uid"]}}
            if plural == "secrets":
                new["data"] = new.pop("stringData", {})
        else:
            new = merge_patch(current, body)
        problems = self._problems(plural, new)
        if problems:
            return self._invalid(kind, qualified, name, problems)
        if plural == "services":
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            self._pending(new)
        self.objects[key] = new
        await self._record(plural, ns, "MODIFIED", new)
        if plural == "services":
            self._spawn(self._become_ready(ns, name, new["metadata"]["generation"]))
        return web.json_response(new)

    def _problems(self, plural: str, obj: Obj) -> list[str]:
        if not self.validate:
            return []
        if plural == "services":
            return knative_problems(obj)
        try:
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            return [str(exc.message)]
        return []

    def _invalid(self, kind: str, qualified: str, name: str, problems: list[str]) -> web.Response:
        api_group = qualified.partition(".")[2]
        label = f"{kind}.{api_group}" if api_group else kind
        return status(
            422,
            "Invalid",
            f'{label} "{name}" is invalid: ' + "; ".join(problems),
            name=name,
            kind=kind,
            causes=[{"reason": "FieldValueInvalid", "message": p} for p in problems],
        )

    async def _create(
        self, request: web.Request, group: str, plural: str, kind: str, qualified: str, ns: str
    ) -> web.Response:
        try:
            obj = await request.json()
        except json.JSONDecodeError:
            return status(400, "BadRequest", "the body is not JSON")
        meta = obj.setdefault("metadata", {})
        name = meta.get("name", "")
        if meta.setdefault("namespace", ns) != ns:
            return status(400, "BadRequest", "the namespace of the object does not match the path")
        problems = self._problems(plural, obj)
        if problems:
            return self._invalid(kind, qualified, name, problems)
        key = (plural, ns, name)
        if key in self.objects:
            return status(
                409,
                "AlreadyExists",
                f'{qualified} "{name}" already exists',
                name=name,
                group=group,
                kind=plural,
            )
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if plural == "secrets":
            obj["data"] = obj.pop("stringData", {})  # (not base64: nobody reads it back here)
        if plural == "persistentvolumeclaims":
            obj["status"] = {"phase": "Bound"}
        if plural == "services":
            meta["generation"] = 1
            # as Knative's defaulting answers it (a reader must take fields it does not know)
            obj["spec"]["template"].setdefault("metadata", {})["creationTimestamp"] = None
            obj["spec"].setdefault("traffic", [{"latestRevision": True, "percent": 100}])
            self._pending(obj)
        self.objects[key] = obj
        self.created[plural] = self.created.get(plural, 0) + 1
        await self._record(plural, ns, "ADDED", obj)
        if plural == "services":
            self._spawn(self._become_ready(ns, name, 1))
        return web.json_response(obj, status=201)

    async def _delete(
        self, request: web.Request, plural: str, qualified: str, ns: str, name: str, current: Obj
    ) -> web.Response:
        options = await request.json() if request.can_read_body else {}
        want = (options.get("preconditions") or {}).get("uid")
        have = current["metadata"]["uid"]
        if want is not None and want != have:
            return status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {qualified} "{name}": Precondition failed: '
                f"UID in precondition: {want}, UID in object meta: {have}",
            )
        del self.objects[(plural, ns, name)]
        await self._record(plural, ns, "DELETED", current)
        if plural == "persistentvolumeclaims":  # answered with the object, as the client expects
            return web.json_response(current)
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": plural, "uid": have},
            }
        )

    async def _watch(self, request: web.Request, plural: str, ns: str) -> web.StreamResponse:
        since = int(request.query.get("resourceVersion") or 0)
        timeout_s = float(request.query.get("timeoutSeconds") or 30)
        labels, fields = request.query.get("labelSelector"), request.query.get("fieldSelector")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if since and since < self.compacted_below:
            gone = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": f"too old resource version: {since} ({self.compacted_below})",
                "reason": "Expired",
                "code": 410,
            }
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            return response
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        seen = since
        try:
            while True:
                for event in self.events:
                    if (
                        event.rv > seen
                        and event.resource == plural
                        and event.namespace == ns
                        and _selected(event.obj, labels, fields)
                    ):
                        line = json.dumps({"type": event.type, "object": event.obj})
                        await response.write(line.encode() + b"\n")
                seen = max([seen, *(e.rv for e in self.events)])
                remaining = deadline - loop.time()
                transport = request.transport
                if remaining <= 0 or self._closing or transport is None or transport.is_closing():
                    break
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        # woken by a change, or soon enough to see the client went away
                        await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client stopped watching
        return response

    # --- a Service's life -----------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _pending(obj: Obj) -> None:
        """The status Knative gives a Service whose revision is not ready yet."""
        name = obj["metadata"]["name"]
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "conditions": [
                {
                    "type": t,
                    "status": "Unknown",
                    "reason": "RevisionMissing" if t != "RoutesReady" else "IngressNotConfigured",
                    "message": f'Configuration "{name}" is waiting for a Revision to become ready.',
                }
                for t in ("ConfigurationsReady", "Ready", "RoutesReady")
            ],
        }

    async def _become_ready(self, ns: str, name: str, generation: int) -> None:
        await asyncio.sleep(self.ready_after_s)
        key = ("services", ns, name)
        obj = self.objects.get(key)
        if obj is None or obj["metadata"]["generation"] != generation:
            return
        if name in self.never_ready:
            state, reason, message = self.never_ready[name]
            if state == "Unknown":
                return
            obj["status"]["conditions"] = [
                {"type": t, "status": state, "reason": reason, "message": message}
                for t in ("ConfigurationsReady", "Ready")
            ]
            await self._record("services", ns, "MODIFIED", obj)
            return
        address = f"http://{name}.{ns}.svc.cluster.local"
        if self.pod is not None:
            address = await self.pod(copy.deepcopy(obj))
        obj = self.objects.get(key)
        if obj is None or obj["metadata"]["generation"] != generation:
            return
        revision = f"{name}-{generation:05d}"
        obj["status"] = {
            "observedGeneration": generation,
            "url": f"http://{name}.{ns}.example.com",
            "address": {"url": address},
            "latestCreatedRevisionName": revision,
            "latestReadyRevisionName": revision,
            "conditions": [
                {"type": t, "status": "True"}
                for t in ("ConfigurationsReady", "Ready", "RoutesReady")
            ],
        }
        await self._record("services", ns, "MODIFIED", obj)
