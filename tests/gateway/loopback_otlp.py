"""A loopback OTLP/HTTP trace receiver (``POST /v1/traces``, protobuf ``ExportTraceServiceRequest``
as an OpenTelemetry Collector takes it), keeping the spans it got."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.gateway.served import serve_app


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, object]
    #: OTLP status code: 0 unset, 1 ok, 2 error
    status: int


def _value(v: AnyValue) -> object:
    """A scalar attribute's value (an array's or a map's: their protobuf message)."""
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


@dataclass
class TraceReceiver:
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def traces(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text="expected application/x-protobuf")
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        self.requests += 1
        for rs in export.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name")),
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex() or None,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            status=s.status.code,
                        )
                    )
        self._arrived.set()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], timeout: float = 30
    ) -> list[ReceivedSpan]:
        """The spans received once ``done`` holds for them (checked as each export arrives)."""
        async with asyncio.timeout(timeout):
            while not done(self.spans):
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.spans)


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[TraceReceiver, str]]:
    """A receiver and its base URL (what ``OTEL_EXPORTER_OTLP_ENDPOINT`` would name)."""
    receiver = TraceReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.traces)
    async with serve_app(app) as url:
        yield receiver, url
