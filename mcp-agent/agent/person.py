"""One person's agent: their folders, workspace, documents, alerts, and how busy it is."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from agent.alerts import AlertBook, alert_of, alert_rule
from agent.broker.live import LiveTrading
from agent.broker.service import PaperBroker
from agent.documents import Documents
from agent.events import EventPublisher
from agent.feed import PriceFeed
from agent.memory import ConversationMemory
from agent.rules_client import RuleClient
from agent.sandbox import Limits, warn_if_unisolated
from agent.workspace import Workspace
from dexorder.config import Settings
from dexorder.contracts.rules import RuleRecord
from dexorder.embeddings import EmbeddingClient
from dexorder.process import write_active_triggers
from dexorder.schemas import Candle
from dexorder.tokens import (
    TokenKeys,
    check_user_id,
    embedder_token,
    mint_token,
    public_keys,
    read_agent_tokens,
    token_keys,
)

log = structlog.get_logger(part="agent")


@dataclass
class Activity:
    """When the agent last served a call (the lifecycle manager reads it)."""

    last_call: float = field(default_factory=time.monotonic)
    calls: int = 0
    #: requests being served now (an agent is never idle in the middle of a call)
    in_flight: int = 0
    #: set the moment the agent decides to exit idle: it promises no caller to stay awake
    #: from then on (``POST /wake`` answers 503), so a caller starts a fresh agent instead
    exiting: bool = False

    def touch(self) -> None:
        self.last_call = time.monotonic()
        self.calls += 1

    def begin(self) -> None:
        self.in_flight += 1
        self.last_call = time.monotonic()

    def end(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.last_call = time.monotonic()  # the idle clock runs from a call's end


class PersonAgent:
    """Everything the agent of ``user`` holds, under ``cfg.agent_dir(user)``."""

    def __init__(self, cfg: Settings, user: str) -> None:
        self.cfg = cfg
        self.user = check_user_id(user)
        self.root = cfg.agent_dir(user)
        self.state_dir = self.root / "state"
        self.backtests = self.root / "backtests"
        #: where the agent writes a run's input files (a fresh folder each run)
        self.run_inputs = self.root / "run-inputs"
        for d in (self.state_dir, self.backtests, self.run_inputs):
            d.mkdir(parents=True, exist_ok=True)
        # a scratch folder the sandbox once wrote on disk may hold links it planted
        shutil.rmtree(self.root / "scratch", ignore_errors=True)  # never follows links
        self.workspace = Workspace(self.root / "workspace")
        self.documents = Documents(self.workspace)
        self.alerts = AlertBook(self.state_dir / "alerts.json")
        self.activity = Activity()
        self._noted_work = -1
        #: the platform's market rules (its stream engine watches alerts and resting
        #: orders); None: this agent runs on its own and watches them itself
        self.rules = (
            RuleClient(cfg.agent.gateway_url, self.service_token) if cfg.agent.gateway_url else None
        )
        self.broker = PaperBroker(self.state_dir / "paper.json", user=self.user, rules=self.rules)
        # the agent checks tokens, it never makes any: the gateway hands it its own
        # (agent.tokens_file); the private key stays with the gateway
        self.keys: TokenKeys = public_keys(token_keys(cfg))
        self.memory = ConversationMemory(
            self.state_dir / "memory",
            EmbeddingClient(cfg.embedder.url, self.embedder_token)
            if cfg.embedder.enabled
            else None,
        )
        self.events: EventPublisher | None = None
        self.feed: PriceFeed | None = None
        self.live = LiveTrading(cfg, self.state_dir, self._live_price, lambda: self.events)
        s = cfg.agent.sandbox
        self.limits = Limits(
            cpu_s=s.cpu_s,
            memory_mb=s.memory_mb,
            wall_s=s.wall_s,
            output_bytes=s.output_kb * 1024,
            scratch_mb=s.scratch_mb,
        )
        self.sandbox_mode = s.isolation
        self.sandbox_proc = s.proc
        warn_if_unisolated(self.sandbox_mode)

    async def start(self) -> None:
        """Start the event channels and the live price feed (inside the event loop)."""
        self.events = EventPublisher(
            self.user,
            self.state_dir / "outbox",
            self.cfg.agent.gateway_events,
            token=self.service_token,
        )
        self.events.start()
        self.broker.events = self.events
        self.feed = PriceFeed(self.cfg, [self.broker.on_candle, self._check_alerts])
        self.broker.feed = self.feed
        self.feed.start()
        if self.rules is None:  # on its own: it watches its alerts and orders itself
            for ticker in self.broker.tickers() | {a.ticker for a in self.alerts.active()}:
                await self.feed.watch(ticker)
        else:
            await self._hand_over_watching()

    async def _hand_over_watching(self) -> None:
        """Alerts and resting orders this agent watched itself (before the platform did)
        become platform rules; the platform is told again of every resting order."""
        assert self.rules is not None
        try:
            for alert in self.alerts.active():
                if not alert.id.startswith("alert-"):
                    rule = alert_rule(
                        self.user,
                        alert.ticker,
                        alert.condition,
                        alert.price,
                        alert.note,
                        f"alert-{alert.id}",
                    )
                    await self.rules.put(rule)
                    self.alerts.discard(alert.id)
                    watched = alert_of(RuleRecord(rule=rule))
                    if watched is not None:
                        self.alerts.put(watched)
            await self.broker.register_resting()
        except ValueError as exc:  # the platform away, a bad old alert: told again next start
            log.warning("alerts and orders not handed to the platform yet", error=str(exc))

    async def close(self) -> None:
        if self.feed is not None:
            await self.feed.close()
        if self.events is not None:
            await self.events.close()
        await self.memory.aclose()
        self.flush()

    async def _live_price(self, ticker: str) -> float:
        if self.feed is None:
            raise TimeoutError(f"no live price for {ticker}: the agent is not started")
        return await self.feed.price(ticker)

    def _check_alerts(self, candle: Candle) -> None:
        if self.rules is not None:
            return  # the platform watches them
        for alert in self.alerts.check(candle.ticker, candle.low, candle.high, candle.close):
            if self.events is not None:
                self.events.critical("alert", alert.model_dump())

    def active_triggers(self) -> int:
        """What keeps the agent from going idle besides calls: nothing where the platform
        watches the market (its alerts and resting orders are rules there, and a fill
        wakes it); for an agent on its own, its active alerts and open orders."""
        if self.rules is not None:
            return 0
        return len(self.alerts.active()) + len(self.broker.book.open_orders())

    def flush(self) -> None:
        """Persist what is only in memory (the events' outbox is always on disk)."""
        self.broker.save()
        self.note_work()

    def service_token(self) -> str:
        """A token for the agent's own calls to platform services, on this person's behalf."""
        if self.cfg.agent.tokens_file:
            return read_agent_tokens(Path(self.cfg.agent.tokens_file)).service
        if self.cfg.agent.service_token:
            return self.cfg.agent.service_token
        return mint_token(self._signing_keys(), self.user, "service", ttl_s=300)

    def embedder_token(self) -> str:
        """A token for the embedding service (it takes only its own audience's tokens)."""
        if self.cfg.agent.tokens_file:
            return read_agent_tokens(Path(self.cfg.agent.tokens_file)).embedder
        if self.cfg.agent.embedder_token:
            return self.cfg.agent.embedder_token
        return embedder_token(self._signing_keys(), self.user)

    def _signing_keys(self) -> TokenKeys:
        """An agent run with no tokens handed to it (in-process, with a private key in its
        configuration) makes its own; one the provisioner started never gets here."""
        return token_keys(self.cfg)

    def note_work(self) -> None:
        """Tell the supervisor whether this agent watches anything (see ``active_triggers``):
        a crashed agent that does is started again at once."""
        count = self.active_triggers()
        if count != self._noted_work:
            write_active_triggers(self.root, count)
            self._noted_work = count

    def revoked_tokens(self) -> frozenset[str]:
        """Ids of the person's revoked tokens (personal access tokens, OAuth grants), as the
        gateway writes them: ``state/revoked_tokens`` (one machine), or beside the agent's
        own tokens (``revoked_tokens`` in the Secret mounted on Knative)."""
        paths = [self.state_dir / "revoked_tokens"]
        if self.cfg.agent.tokens_file:
            paths.append(Path(self.cfg.agent.tokens_file).with_name("revoked_tokens"))
        ids: set[str] = set()
        for path in paths:
            if path.is_file():
                ids.update(line.strip() for line in path.read_text().splitlines() if line.strip())
        return frozenset(ids)
