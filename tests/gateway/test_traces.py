"""Traces of a chat turn: one trace from the WebSocket message through the gateway's turn
(authenticate, provision, context, RAG, model, tools, save) into the person's agent (its
tools, its sandbox), carried over MCP; the person on every span; nothing when no OTLP
endpoint is configured.

The gateway runs in this process (its spans go to an in-memory exporter); each agent is a
subprocess exporting over OTLP/HTTP to a loopback receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dexorder import telemetry
from dexorder.config import TelemetryConfig
from gateway.agent_jail import agent_settings
from tests.gateway.agent_calls import agent_session
from tests.gateway.loopback_otlp import ReceivedSpan, otlp_receiver
from tests.gateway.served import gateway_settings, serve_gateway

pytestmark = pytest.mark.integration

_GATEWAY_SPANS = InMemorySpanExporter()
_installed = False


@pytest.fixture
def gateway_spans() -> Iterator[InMemorySpanExporter]:
    """This process's spans (the gateway's), kept in memory: the tracer provider is
    process-wide and installed once, so every test of this process shares the exporter
    (emptied after each: later tests of this process do not pile spans up in it)."""
    global _installed
    if not _installed:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):  # another test's: ours joins it
            current.add_span_processor(telemetry.UserAttribute())
            current.add_span_processor(SimpleSpanProcessor(_GATEWAY_SPANS))
        else:
            tp = telemetry.provider("dexorder-gateway", _GATEWAY_SPANS, batch=False)
            trace.set_tracer_provider(tp)
        _installed = True
    _GATEWAY_SPANS.clear()
    yield _GATEWAY_SPANS
    _GATEWAY_SPANS.clear()


def received(s: ReadableSpan) -> ReceivedSpan:
    """An in-memory span in the receiver's terms, so both sides are checked alike."""
    ctx = s.get_span_context()
    assert ctx is not None
    return ReceivedSpan(
        service=str(s.resource.attributes.get("service.name")),
        name=s.name,
        trace_id=format(ctx.trace_id, "032x"),
        span_id=format(ctx.span_id, "016x"),
        parent_id=format(s.parent.span_id, "016x") if s.parent else None,
        attributes=dict(s.attributes or {}),
        status=s.status.status_code.value,
    )


def in_trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def one(spans: list[ReceivedSpan], name: str, service: str | None = None) -> ReceivedSpan:
    found = [s for s in spans if s.name == name and service in (None, s.service)]
    assert len(found) == 1, (name, service, sorted(s.name for s in spans))
    return found[0]


def client_spans_answered(gateway: list[ReceivedSpan], agent: list[ReceivedSpan]) -> bool:
    """Whether each MCP request of the gateway's spans has the agent's span under it."""
    sent = {s.span_id for s in gateway if s.name.startswith("MCP send")}
    return sent <= {s.parent_id for s in agent}


async def test_one_trace_from_the_websocket_message_to_the_agents_tools_and_sandbox(
    tmp_path: Path, gateway_spans: InMemorySpanExporter
) -> None:
    async with otlp_receiver() as (receiver, url):
        cfg = gateway_settings(tmp_path / "home")
        cfg = cfg.model_copy(update={"telemetry": TelemetryConfig(otlp_endpoint=url)})
        # the agent's batches go out every 20 ms instead of every 5 s
        async with serve_gateway(cfg, agent_env={"OTEL_BSP_SCHEDULE_DELAY": "20"}) as served:
            alice = await served.sign_up("alice@example.com")
            user = alice["account"]["id"]
            async with served.socket(alice["access_token"]) as ws:
                listed = await ws.ask("list my strategies")
                assert listed[-1]["type"] == "reply" and "sma_cross" in listed[-1]["text"]
                failed = await ws.ask("show strategy no_such_one")
                assert failed[-1]["type"] == "reply"
                assert ("read_strategy", "error") in [
                    (f["name"], f["state"]) for f in failed if f["type"] == "tool"
                ]

            status, answer = await served.post(
                "/api/chat", {"message": "what alerts do I have"}, token=alice["access_token"]
            )
            assert status == 200 and "no alerts" in answer["reply"]

            # the sandbox, reached as the gateway reaches it: an MCP call under a span
            endpoint = await served.gw.provisioner.ensure(user, "free")
            with telemetry.as_user(user), telemetry.span("test.run_python"):
                async with agent_session(
                    endpoint.mcp_url, served.gw.harness.agent_token(user)
                ) as calls:
                    assert await calls.ok("run_python", code="result = 6 * 7")

        gateway = [received(s) for s in gateway_spans.get_finished_spans()]
        roots = [s for s in gateway if s.name == "chat.message"]
        assert [r.attributes["chat.channel"] for r in roots] == ["web", "web", "http"]
        assert all(r.parent_id is None for r in roots)
        turns = [r.trace_id for r in roots]
        sandbox_trace = one(gateway, "test.run_python").trace_id
        ours = [s for s in gateway if s.trace_id in {*turns, sandbox_trace}]
        agent = await receiver.wait_for(
            lambda spans: (
                client_spans_answered(ours, spans)
                and any(s.name == "sandbox python" for s in spans)
            )
        )

    # --- the first turn: one tree, the gateway's steps, the agent's tool under them ---
    first = turns[0]
    here, there = in_trace(gateway, first), in_trace(agent, first)
    assert there and {s.service for s in there} == {"dexorder-agent"}
    tree = here + there
    ids = {s.span_id for s in tree}
    assert [s for s in tree if s.parent_id not in ids] == [roots[0]]  # no orphans
    for name in ("authenticate", "provision", "connect", "context", "rag", "save"):
        one(here, name)
    models = [s for s in here if s.name == "model"]
    assert len(models) == 2  # the tool call, then the answer
    for model in models:
        assert model.attributes["gen_ai.request.model"] == "offline"
        assert model.attributes["gen_ai.response.model"] == "offline"
        assert model.attributes["gen_ai.usage.input_tokens"] == 0  # the offline model reads none
    # what the reply said the turn cost is what its model spans say
    spent = [s.attributes["gen_ai.usage.output_tokens"] for s in models]
    assert all(isinstance(n, int) for n in spent) and spent[-1]
    assert sum(n for n in spent if isinstance(n, int)) == listed[-1]["tokens"]

    tool = one(here, "tool list_strategies")
    assert tool.attributes["gen_ai.tool.name"] == "list_strategies" and tool.status != 2
    sent = one(here, "MCP send tools/call list_strategies")
    assert sent.parent_id == tool.span_id
    served_call = one(there, "tools/call list_strategies")
    assert served_call.parent_id == sent.span_id  # across the process boundary
    agent_tool = one(there, "tool list_strategies")
    assert agent_tool.parent_id == served_call.span_id and agent_tool.status != 2
    # the context resources and the saved messages went over MCP in the same trace
    assert sum(s.name.startswith("resources/read") for s in there) == 4
    assert sum(s.name == "tools/call save_message" for s in there) == 2

    # --- the second turn: the failed tool marked failed on both sides ---
    second = in_trace(gateway, turns[1]) + in_trace(agent, turns[1])
    failed_here = one(second, "tool read_strategy", "dexorder-gateway")
    assert failed_here.status == 2 and failed_here.attributes["error.type"] == "tool_error"
    failed_there = one(second, "tool read_strategy", "dexorder-agent")
    assert failed_there.status == 2

    # --- the HTTP chat: its own trace, down to the agent's tool ---
    over_http = in_trace(gateway, turns[2]) + in_trace(agent, turns[2])
    assert one(over_http, "tool list_alerts", "dexorder-agent").parent_id == (
        one(over_http, "tools/call list_alerts").span_id
    )

    # --- the sandbox: the run_python tool's job under its tool span ---
    run = in_trace(agent, sandbox_trace)
    job = one(run, "sandbox python")
    assert job.parent_id == one(run, "tool run_python").span_id
    assert one(run, "tool run_python").parent_id == one(run, "tools/call run_python").span_id

    # --- the person on every span of theirs, on both sides ---
    everything = [
        *[s for s in gateway if s.trace_id in {*turns, sandbox_trace}],
        *[s for s in agent if s.trace_id in {*turns, sandbox_trace}],
    ]
    assert len(everything) > 30
    assert {s.attributes.get(telemetry.USER) for s in everything} == {user}


async def test_without_an_endpoint_nothing_is_traced_and_turns_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    cfg = gateway_settings(tmp_path / "home")
    assert cfg.telemetry.endpoint() is None
    pem = "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"
    assert agent_settings(cfg, pem, tmp_path / "t.json").telemetry.otlp_endpoint is None
    # the standard variable, set for the gateway, is passed on to its agents' configuration
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    passed = agent_settings(cfg, pem, tmp_path / "t.json").telemetry.otlp_endpoint
    assert passed == "http://127.0.0.1:4318"
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")

    # a process with no endpoint (as an agent or a gateway starts): no provider, spans
    # that record nothing, the exporter never loaded
    probe = (
        "import json, sys\n"
        "from opentelemetry import trace\n"
        "from dexorder import telemetry\n"
        "from dexorder.config import TelemetryConfig\n"
        "on = telemetry.setup(TelemetryConfig(), 'dexorder-agent', user='alice')\n"
        "with telemetry.span('tool x') as s:\n"
        "    recording = s.is_recording()\n"
        "print(json.dumps({'on': on, 'recording': recording,\n"
        "    'provider': type(trace.get_tracer_provider()).__name__,\n"
        "    'exporter': any('otlp' in m for m in sys.modules)}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "on": False,
        "recording": False,
        "provider": "ProxyTracerProvider",
        "exporter": False,
    }

    # and a turn, with agents started with no endpoint, is answered as ever
    async with serve_gateway(cfg) as served:
        alice = await served.sign_up("alice@example.com")
        async with served.socket(alice["access_token"]) as ws:
            frames = await ws.ask("list my strategies")
        assert frames[-1]["type"] == "reply" and "sma_cross" in frames[-1]["text"]


async def test_each_request_through_the_mcp_door_is_a_span_between_the_client_and_the_agent(
    tmp_path: Path, gateway_spans: InMemorySpanExporter
) -> None:
    """An outside MCP client's calls: the door's span (method, tool, person, status, the
    agent woken or not) under the client's span, the agent's spans under the door's; a
    refused request is a span too, under the ``traceparent`` header it came with."""
    async with otlp_receiver() as (receiver, url):
        cfg = gateway_settings(tmp_path / "home")
        cfg = cfg.model_copy(update={"telemetry": TelemetryConfig(otlp_endpoint=url)})
        async with serve_gateway(cfg, agent_env={"OTEL_BSP_SCHEDULE_DELAY": "20"}) as served:
            alice = await served.sign_up("alice@example.com")
            user, token = alice["account"]["id"], alice["access_token"]
            async with (
                httpx2.AsyncClient(
                    headers={"Authorization": f"Bearer {token}"}, timeout=120
                ) as http,
                Client(streamable_http_client(served.url + "/mcp", http_client=http)) as client,
            ):
                with telemetry.span("test.client"):  # the client's own trace
                    # (the client's handshake, as it opened, woke the agent)
                    await client.call_tool("get_positions", {})
                    await client.call_tool("get_positions", {})
            # refused at the door, under the caller's trace context in its header
            parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
            async with httpx2.AsyncClient(timeout=30) as raw:
                refused = await raw.post(
                    served.url + "/mcp",
                    json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                    headers={"Authorization": "Bearer nonsense", "traceparent": parent},
                )
                assert refused.status_code == 401

        gateway = [received(s) for s in gateway_spans.get_finished_spans()]
        calls = [
            s
            for s in gateway
            if s.name == "mcp.door tools/call"
            and s.attributes.get("gen_ai.tool.name") == "get_positions"
        ]
        agent = await receiver.wait_for(
            lambda spans: len([s for s in spans if s.parent_id in {c.span_id for c in calls}]) >= 2
        )

    assert len(calls) == 2
    sends = [s for s in gateway if s.name == "MCP send tools/call get_positions"]
    assert len(sends) == 2
    for door, sent in zip(calls, sends, strict=True):
        assert door.parent_id == sent.span_id and door.trace_id == sent.trace_id
        assert door.attributes["mcp.method.name"] == "tools/call"
        assert door.attributes[telemetry.USER] == user
        assert door.attributes["http.response.status_code"] == 200
        assert door.status != 2
        served_call = one(
            [s for s in agent if s.parent_id == door.span_id], "tools/call get_positions"
        )
        assert served_call.service == "dexorder-agent" and served_call.trace_id == door.trace_id
    # the client's first request (its handshake) woke the agent, nothing after it
    woke = [s for s in gateway if s.attributes.get("dexorder.mcp.woken") is True]
    assert len(woke) == 1 and woke[0].name.startswith("mcp.door ")
    assert woke[0] not in calls
    assert [c.attributes["dexorder.mcp.woken"] for c in calls] == [False, False]
    # the client's trace: one tree from its span through the door into the agent
    root = one(gateway, "test.client")
    assert {s.trace_id for s in [*calls, *sends]} == {root.trace_id}

    turned_away = [s for s in gateway if s.name == "mcp.door POST"]
    assert len(turned_away) == 1
    assert turned_away[0].attributes["http.response.status_code"] == 401
    assert turned_away[0].trace_id == "ab" * 16 and turned_away[0].parent_id == "cd" * 8
    assert telemetry.USER not in turned_away[0].attributes
