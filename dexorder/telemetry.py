"""Traces of chat turns (OpenTelemetry), shared by the gateway and the person's agent.

Off unless an OTLP endpoint is configured (``telemetry.otlp_endpoint``, else the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``): then no tracer provider is installed, every span is the
API's non-recording one and nothing is exported. On, each process installs one provider
that exports over OTLP/HTTP in batches (a background thread: a turn never waits on it).

Across processes the trace context travels as W3C ``traceparent`` (and ``baggage``) in
each MCP request's ``_meta``: the MCP SDK puts it there on the client and continues it on
the server, so the agent's spans are children of the gateway's.

Every span carries the person it is for (``enduser.id``): the gateway sets it on the turn
(:func:`as_user`, carried as baggage), an agent knows it for its whole life (``setup``'s
``user``: one agent serves one person).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import baggage, context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from dexorder.config import TelemetryConfig

#: The attribute (OpenTelemetry semantic conventions) naming the person a span is for.
USER = "enduser.id"
_TRACER = "dexorder"

__all__ = [
    "USER",
    "SpanKind",
    "UserAttribute",
    "as_user",
    "failed",
    "provider",
    "setup",
    "span",
    "traces_url",
]


class UserAttribute(SpanProcessor):
    """Sets ``enduser.id`` on every span as it starts: from the ``enduser.id`` baggage of
    its parent context (a gateway turn, or the gateway's request arriving at an agent),
    else this process's own person (an agent), else not at all."""

    def __init__(self, default: str | None = None) -> None:
        self.default = default

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        user = baggage.get_baggage(USER, parent_context) or self.default
        if user:
            span.set_attribute(USER, str(user))

    def on_end(self, span: ReadableSpan) -> None:
        pass


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL under a collector's base URL (as the standard variable
    means it); a URL already ending in ``/v1/traces`` is taken as it is."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


def provider(
    service: str, exporter: SpanExporter, *, user: str | None = None, batch: bool = True
) -> TracerProvider:
    """A tracer provider for ``service`` sending to ``exporter`` (in batches, or each span
    as it ends), every span marked with its person."""
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(UserAttribute(user))
    if batch:
        tp.add_span_processor(BatchSpanProcessor(exporter))
    else:
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp


def setup(cfg: TelemetryConfig, service: str, *, user: str | None = None) -> bool:
    """Trace this process when an endpoint is configured (once, at its start); whether
    it does."""
    endpoint = cfg.endpoint()
    if endpoint is None:
        return False
    # imported here: a process with traces off never loads the exporter (~30 ms)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=traces_url(endpoint))
    trace.set_tracer_provider(provider(service, exporter, user=user))
    return True


def span(
    name: str,
    attributes: Mapping[str, AttributeValue] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> contextlib.AbstractContextManager[trace.Span]:
    """A span of this process's tracer, current while the ``with`` block runs (an error
    escaping the block is recorded on it)."""
    return trace.get_tracer(_TRACER).start_as_current_span(name, kind=kind, attributes=attributes)


def failed(span: trace.Span, error_type: str, description: str) -> None:
    """Mark ``span`` as failed without an exception (a tool that answered with an error)."""
    span.set_attribute("error.type", error_type)
    span.set_status(trace.StatusCode.ERROR, description[:500])


@contextlib.contextmanager
def as_user(user: str) -> Iterator[None]:
    """Spans started in the block (and the agent's, reached over MCP from it) are ``user``'s."""
    token = context.attach(baggage.set_baggage(USER, user))
    try:
        yield
    finally:
        context.detach(token)
