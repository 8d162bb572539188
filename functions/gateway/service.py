"""The gateway as one object: accounts, sessions, limits, provisioning, the harness and
the person's channels, with the operations its HTTP, WebSocket and Telegram handlers share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from dexorder import telemetry
from dexorder.client import request
from dexorder.config import Settings
from dexorder.contracts.accounts import AccountDeleted
from dexorder.contracts.chat import ServerFrame, StatusFrame
from dexorder.contracts.events import Notification
from dexorder.embeddings import EmbeddingClient, EmbeddingUnavailable
from dexorder.record_signing import record_keys
from dexorder.schemas import ErrorReply, RealtimeRequest
from dexorder.secret_files import secret_file
from dexorder.tokens import InvalidToken, TokenKeys, embedder_token, token_keys, verify_token
from gateway.accounts.db import engine_for, migrate
from gateway.accounts.sessions import SessionClaims, Sessions
from gateway.accounts.store import AccountError, Accounts, AccountView
from gateway.channels import ChannelHub
from gateway.events import DeliveredEvents, EventRouter
from gateway.harness.graph import Send
from gateway.harness.knowledge import DEFAULT_FOLDER, KnowledgeBase
from gateway.harness.model import ModelReply
from gateway.harness.router import ModelRouter
from gateway.harness.turn import Harness, TurnResult
from gateway.held import SWEEP_S, HeldNotifications, UnknownPerson, deliver_held
from gateway.leases import LeaseLost, Leases, LocalLeases, check_held, leases_for
from gateway.limits import Limits, MemoryCounter, RedisCounter, tier_limits
from gateway.provisioning import LocalProvisioner, Provisioner, ProvisioningError
from gateway.replica_contracts import fanout_key
from gateway.replica_fanout import Here, LoneReplica, Replicas
from gateway.replica_redis import RedisReplicas
from gateway.rules import RuleRefused, RuleStore
from gateway.telegram import BotApi, SeenUpdates
from gateway.throttle import AuthPolicies, Throttle

log = structlog.get_logger(part="gateway")

#: The account id the gateway's own calls to platform services are made as.
GATEWAY_PRINCIPAL = "gateway"
#: Leeway for the clocks of whoever minted a token (its expiry vs the maximum).
_CLOCK_SKEW_S = 300
#: What the person is told when this replica lost their turn's lease mid-turn.
TURN_INTERRUPTED = (
    "Your message was interrupted on this server (it stalled and lost its hold on your "
    "conversation); another server may carry on. If no answer comes, send it again."
)


class Refused(Exception):
    """A request the gateway turns down; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


@dataclass(frozen=True)
class Caller:
    """Who is calling: an account, by a login session or by a platform token."""

    account: AccountView
    via: Literal["session", "token"]
    session: SessionClaims | None = None
    #: the id (``jti``) of the platform token it came with (a personal access token, an
    #: OAuth grant's access token): what the person's agent is told when it is revoked
    token_id: str | None = None

    @property
    def id(self) -> str:
        return self.account.id


def _session_secret(cfg: Settings) -> str:
    if cfg.gateway.session_secret:
        return cfg.gateway.session_secret
    path = Path(cfg.home) / "state" / "gateway_session_secret"
    return secret_file(path, lambda: secrets.token_urlsafe(48)).strip()


class Gateway:
    """Everything the gateway's handlers work with."""

    def __init__(
        self,
        cfg: Settings,
        accounts: Accounts,
        sessions: Sessions,
        limits: Limits,
        provisioner: Provisioner,
        harness: Harness,
        hub: ChannelHub,
        keys: TokenKeys,
        bot: BotApi | None,
        rules: RuleStore | None = None,
        leases: Leases | None = None,
    ) -> None:
        self.cfg = cfg
        self.accounts = accounts
        self.sessions = sessions
        self.limits = limits
        self.provisioner = provisioner
        #: a person's turns (``turn:<user>``) and agent starts (``agent:<user>``) one at a
        #: time across replicas: Redis leases when ``gateway.redis_url`` is set
        self.leases = leases or LocalLeases()
        provisioner.leases = self.leases
        self.harness = harness
        self.hub = hub
        self.keys = keys
        self.bot = bot
        #: people's market rules (alerts, resting orders); None without Kafka
        self.rules = rules
        if rules is not None and isinstance(provisioner, LocalProvisioner):
            # agents register their rules here only where the platform watches them;
            # without it an agent watches its own alerts and orders
            provisioner.env.setdefault("DEXORDER_AGENT__GATEWAY_URL", cfg.gateway.url)
        self.events = EventRouter(
            cfg.gateway.events_address,
            DeliveredEvents(accounts.engine),
            hub.deliver,
            sender=self._event_sender,
            claims=hub.replicas.claims,
        )
        #: notifications taken while none of their person's channels was reachable
        self.held = HeldNotifications(accounts.engine)
        #: sign-up, login and Telegram /link guesses, counted where the rate limits are
        self.throttle = Throttle(limits.counter, AuthPolicies.from_config(cfg.gateway.auth_limits))
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.telegram_updates = SeenUpdates()

    @classmethod
    def build(cls, cfg: Settings, provisioner: Provisioner | None = None) -> Gateway:
        g = cfg.gateway
        engine = engine_for(
            g.database_url or f"sqlite:///{Path(cfg.home) / 'state' / 'accounts.db'}"
        )
        Path(cfg.home, "state").mkdir(parents=True, exist_ok=True)
        migrate(engine)
        accounts = Accounts(engine)
        sessions = Sessions(
            accounts, _session_secret(cfg), g.access_ttl_s, g.refresh_ttl_days * 86_400
        )
        limits_prefix = f"{g.redis_prefix}limits:"  # tests sharing one Redis use their own
        counter = RedisCounter(g.redis_url, limits_prefix) if g.redis_url else MemoryCounter()
        keys = token_keys(cfg)
        knowledge = None
        if cfg.embedder.enabled:
            embedder = EmbeddingClient(
                cfg.embedder.url, lambda: embedder_token(keys, GATEWAY_PRINCIPAL)
            )
            knowledge = KnowledgeBase(
                embedder, path=Path(cfg.home) / "state" / "gateway" / "qdrant", url=g.qdrant_url
            )
        api_key = g.anthropic_api_key or os.environ.get("ANTHROPIC_API_KEY")
        harness = Harness(cfg, keys, ModelRouter(g, api_key), knowledge)
        bot = BotApi(g.telegram_bot_token, g.telegram_api_url) if g.telegram_bot_token else None
        if provisioner is None and g.provisioner == "knative":
            # imported only here: the Kubernetes client is of no use on one machine
            from gateway.knative.provisioner import KnativeProvisioner

            # revoked tokens' ids go to the agents too (their token Secret)
            provisioner = KnativeProvisioner(cfg, revoked_ids=accounts.revoked_pat_ids)
        if provisioner is None:
            provisioner = LocalProvisioner(
                cfg,
                env={
                    "DEXORDER_AGENT__GATEWAY_EVENTS": g.events_address,
                },
            )
        if g.provisioner == "knative":
            # an open MCP session is an open request, which keeps an agent's pod up
            harness.links.linger_s = cfg.knative.session_linger_s
        replicas: Replicas = LoneReplica()
        if g.redis_url:  # events go to whichever replica holds the person's socket
            replicas = RedisReplicas(
                g.redis_url,
                g.redis_prefix,
                fanout_key(_session_secret(cfg)),
                answer_s=g.replica_answer_s,
                presence_ttl_s=g.presence_ttl_s,
            )
        hub = ChannelHub(accounts, bot, replicas)
        rules = None
        if cfg.kafka.bootstrap_servers:
            router = cfg.relay.router_address

            async def ask_stream(ticker: str) -> None:
                reply = await request(router, RealtimeRequest(ticker=ticker))
                if isinstance(reply, ErrorReply):
                    log.warning(
                        "the relay refused a rule's ticker", ticker=ticker, reason=reply.message
                    )

            rules = RuleStore(cfg.kafka.connection(), record_keys(cfg), ask_stream=ask_stream)
        return cls(
            cfg,
            accounts,
            sessions,
            Limits(counter, tier_limits(g.monthly_budget_usd)),
            provisioner,
            harness,
            hub,
            keys,
            bot,
            rules,
            leases_for(g),
        )

    # --- life ---------------------------------------------------------------------------

    async def start(self, events: bool = True) -> None:
        """Ready to serve; ``events``: also bind the ROUTER agents send critical events to
        (the process that holds people's WebSockets does)."""
        await asyncio.to_thread(
            self.accounts.ensure_account, self.cfg.gateway.local_user, "local@localhost"
        )
        if self.harness.knowledge is not None:
            self._tasks.append(asyncio.create_task(self._load_knowledge()))
        if self.rules is not None:
            self.rules.start()
        self._tasks.append(asyncio.create_task(self._sweep_held()))
        await self.hub.replicas.start(
            Here(
                online=self.hub.online,
                people=self.hub.people,
                to_sockets=self.hub.to_sockets,
                mark=lambda event: asyncio.to_thread(self.events.delivered.mark, event),
                deliver_held=self.deliver_held,
            )
        )
        if events:
            self._tasks.append(asyncio.create_task(self.events.run()))
            await self.events.ready.wait()

    async def _load_knowledge(self) -> None:
        assert self.harness.knowledge is not None
        folder = Path(self.cfg.gateway.knowledge_dir or DEFAULT_FOLDER)
        for attempt in range(60):  # the embedding service may still be loading its model
            try:
                added = await self.harness.knowledge.load_folder(folder)
                log.info("knowledge loaded", folder=str(folder), chunks_embedded=added)
                return
            except EmbeddingUnavailable as exc:
                if attempt == 59:
                    log.warning("knowledge not loaded", reason=str(exc))
                await asyncio.sleep(2)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` beside the request that started it (a Telegram turn, say)."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        self.events.stop()
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(BaseException):
                await task
        await self.hub.replicas.close()
        if self.rules is not None:
            await self.rules.close()
        await self.harness.close()
        await self.provisioner.close()
        if self.bot is not None:
            await self.bot.close()
        if isinstance(self.limits.counter, RedisCounter):
            await self.limits.counter.close()
        await self.leases.close()
        self.accounts.engine.dispose()

    # --- who is calling ---------------------------------------------------------------

    def authenticate(self, token: str) -> Caller:
        """The caller a bearer token names: a login session, or a platform token (a
        personal access token, or the local person's token of ``dexorder chat``)."""
        token = token.strip()
        if not token:
            raise Refused(401, "missing bearer token")
        try:
            claims = self.sessions.verify(token)
        except AccountError as exc:
            session_error: str | None = str(exc)
        else:
            return Caller(self._account(claims.account_id), "session", claims)
        try:
            agent_claims = verify_token(self.keys, token)
        except InvalidToken as exc:
            # which error to show: the one of the kind of token it claims to be
            message = str(exc) if "expired" in str(exc) else session_error
            raise Refused(401, message or "invalid token") from None
        max_ttl_s = self.cfg.gateway.max_token_ttl_days * 86_400
        if (
            agent_claims.expires_at is None
            or agent_claims.expires_at - time.time() > max_ttl_s + _CLOCK_SKEW_S
        ):
            # made before the maximum applied (or outside the gateway): never accepted
            raise Refused(
                401,
                "this token never expires or outlives the platform's maximum of "
                f"{self.cfg.gateway.max_token_ttl_days} days; make a new one",
            )
        if agent_claims.token_id in self.accounts.revoked_pat_ids(agent_claims.user):
            raise Refused(401, "token revoked")
        # an MCP client's OAuth access token (jti: its grant) is listed with its last use
        self.accounts.oauth.note_use(agent_claims.user, agent_claims.token_id)
        return Caller(self._account(agent_claims.user), "token", token_id=agent_claims.token_id)

    @staticmethod
    def require_session(caller: Caller, what: str) -> None:
        """Refuse (403) what only a login session may do: a token (a personal access token,
        say, stolen from a client's config) cannot make more tokens or delete the account."""
        if caller.via != "session":
            raise Refused(
                403,
                f"only a login session can {what}; a personal access token cannot. "
                "Log in (POST /api/auth/login) and use its access token",
            )

    def _account(self, account_id: str) -> AccountView:
        try:
            return self.accounts.get(account_id)
        except AccountError:
            raise Refused(401, "the account of this token no longer exists") from None

    def _event_sender(self, auth: str) -> str:
        try:
            return verify_token(self.keys, auth).user
        except InvalidToken as exc:
            raise ValueError(str(exc)) from None

    # --- a chat turn ----------------------------------------------------------------------

    async def chat(self, caller: Caller, text: str, channel: str, send: Send) -> TurnResult:
        """One turn for ``caller``: limits, their agent running, the harness, accounting."""
        text = text.strip()
        if not text:
            raise Refused(400, "the message is empty")
        if len(text) > self.cfg.gateway.max_message_chars:
            raise Refused(
                413,
                "the message is too long "
                f"(at most {self.cfg.gateway.max_message_chars:,} characters)",
            )
        user, tier = caller.id, caller.account.tier
        verdict = await self.limits.request(user, tier)
        if not verdict.allowed:
            raise Refused(429, verdict.detail, verdict.retry_after_s)
        verdict = await self.limits.budget(user, tier)
        if not verdict.allowed:
            raise Refused(429, verdict.detail)
        try:
            result = await self._turn(user, tier, text, channel, send)
        except LeaseLost as exc:
            # this replica stalled past the lease: what ran was stopped before anything
            # more reached the person or their agent (another replica may be answering)
            log.error("turn interrupted: lease lost", user=user, key=exc.key)
            raise Refused(503, TURN_INTERRUPTED, retry_after=1) from None
        log.info("turn", user=user, model=result.model, why=result.why, cost_usd=result.cost_usd)
        return result

    async def _turn(self, user: str, tier: str, text: str, channel: str, send: Send) -> TurnResult:
        # one conversation per person: turns from all channels and replicas in order
        async with self.leases.hold(f"turn:{user}"):

            async def guarded(frame: ServerFrame) -> None:
                check_held()  # nothing more reaches the person once the lease is lost
                await send(frame)

            async def starting() -> None:
                await guarded(StatusFrame(text="Starting your agent…"))

            try:
                with telemetry.span("provision", {"dexorder.tier": tier}):
                    endpoint = await self.provisioner.ensure(user, tier, on_starting=starting)
            except ProvisioningError as exc:
                raise Refused(exc.status, str(exc)) from None
            try:

                async def meter(reply: ModelReply) -> str | None:
                    # each model call as it answers: a turn stops between tool rounds
                    # once the budget is used up, and a turn that fails still counts
                    return await self.limits.charge(user, tier, reply.tokens, reply.cost_usd)

                result = await self.harness.turn(
                    user=user,
                    tier=tier,
                    channel=channel,
                    text=text,
                    mcp_url=endpoint.mcp_url,
                    send=guarded,
                    meter=meter,
                )
            finally:
                self.harness.links.release(user)  # closed after a while (Knative), or kept
        return result

    # --- notifications held while the person is away -------------------------------------

    async def hold_notification(self, note: Notification) -> bool:
        """Keep ``note`` until its person next connects (False: it is held already);
        :class:`Refused` (404) when they have no account."""
        try:
            taken = await asyncio.to_thread(self.held.hold, note)
        except UnknownPerson:
            raise Refused(404, f"no such account: {note.user}") from None
        if self.hub.online(note.user):  # they connected while it was being held
            await self.deliver_held(note.user)
        else:  # or connected to another replica: it delivers now, not at its next sweep
            await self.hub.replicas.held_waiting(note.user)
        return taken

    async def deliver_held(self, user: str) -> int:
        """Deliver what is held for ``user`` (they have just connected); how many."""
        return await deliver_held(self.held, self.events.delivered, self.hub.deliver, user)

    async def _sweep_held(self, every_s: float = SWEEP_S) -> None:
        """Now and then, deliver what another replica held for people connected here."""
        while True:
            await asyncio.sleep(every_s)
            here = self.hub.people()
            if not here:
                continue
            try:
                for user in await asyncio.to_thread(self.held.people_waiting, here):
                    await self.deliver_held(user)
            except Exception:  # the database away for a moment: the next sweep tries again
                log.exception("delivering held notifications failed")

    # --- the person's data --------------------------------------------------------------

    async def revoke_pat(self, caller: Caller, pat_id: str) -> None:
        await asyncio.to_thread(self.accounts.revoke_pat, caller.id, pat_id)
        revoked = await asyncio.to_thread(self.accounts.revoked_pat_ids, caller.id)
        await self.provisioner.revoke_tokens(caller.id, revoked)

    async def delete_account(self, caller: Caller) -> AccountDeleted:
        """Delete my data: the account, the agent's workspace and events, the person's vectors."""
        user = caller.id
        await self.harness.forget(user)
        vectors = 0
        if self.harness.knowledge is not None:
            vectors = await self.harness.knowledge.forget_person(user)
        await self.provisioner.delete(user)
        if self.rules is not None:  # stopped agent first: it can add none meanwhile
            try:
                await self.rules.forget(user)
            except RuleRefused as exc:
                raise Refused(
                    exc.status, f"your rules could not be removed: {exc.message}"
                ) from None
        await asyncio.to_thread(self.accounts.delete, user)
        await asyncio.to_thread(self.events.delivered.forget_account, user)
        await asyncio.to_thread(self.held.forget_account, user)
        log.info("account deleted", user=user)
        return AccountDeleted(deleted=user, knowledge_vectors=vectors)
