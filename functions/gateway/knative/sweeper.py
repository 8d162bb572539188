"""The lifecycle sidecar: ``python -m gateway.knative.sweeper``.

Every ``knative.sweep_interval_s`` it removes the agents' Knative Service, workspace PVC
and token Secret of people who deleted their account, and of anonymous people idle past
``knative.anonymous_retention_days``. Never anything else:

* only objects listed by the platform's labels in ``knative.namespace``;
* of those, only objects that say whose they are consistently (the annotation naming the
  person, the label with their id's hash, the name the template gives that person's
  object): anything else is left alone and logged;
* only for people the accounts database says are gone (or anonymous and expired): a
  person it does not answer for, a database it cannot read, or one that says nobody at
  all exists (a wrong or empty database, likelier than everyone leaving), removes nothing;
  it runs only with ``gateway.database_url`` set (never a database of its own);
* each deletion is conditional on the uid that was inspected (an object made again
  since is not touched).

The decision is pure (:func:`plan`); the sweep (:func:`sweep_once`) lists, asks the
people directory, and deletes. Its ServiceAccount may list and delete agent Services and
PVCs and delete Secrets in the agents' namespace, nothing more.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import structlog
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from dexorder.config import ConfigError, Settings, load_config
from dexorder.log import setup_logging
from dexorder.tokens import InvalidUserId, check_user_id
from gateway.knative import manifests
from gateway.knative.api import Cluster, ClusterError, Meta, ignoring_not_found

log = structlog.get_logger(part="lifecycle")

Kind = Literal["service", "pvc"]
#: A directory that says this many people with agents, and not one other, are all gone is
#: not believed (see :func:`plan`).
IMPLAUSIBLY_EMPTY = 3


@dataclass(frozen=True)
class AgentObject:
    """A Service or PVC the sweeper may look at: its kind and metadata."""

    kind: Kind
    meta: Meta


@dataclass(frozen=True)
class Person:
    """What the people directory says of one person id."""

    exists: bool
    anonymous: bool = False
    #: when they last sent a message (epoch seconds), for anonymous people
    last_active_at: float | None = None


class People(Protocol):
    """Who is still there: the accounts database in the cluster."""

    async def lookup(self, users: set[str]) -> dict[str, Person]:
        """An answer for each of ``users`` (raises if it cannot answer)."""
        ...


@dataclass(frozen=True)
class Plan:
    """What a sweep does: the objects to delete, and those it refuses to judge (and why)."""

    delete: list[tuple[AgentObject, str]] = field(default_factory=list)
    refused: list[tuple[AgentObject, str]] = field(default_factory=list)
    kept: int = 0


def owner(obj: AgentObject, namespace: str) -> tuple[str | None, str]:
    """The person ``obj`` is the agent object of, or None and why it cannot be said (pure)."""
    meta = obj.meta
    missing = {k: v for k, v in manifests.PLATFORM_LABELS.items() if meta.labels.get(k) != v}
    if missing:
        return None, f"not labelled as the platform's agent ({', '.join(missing)})"
    if meta.namespace not in (None, namespace):
        return None, f"in namespace {meta.namespace}, not {namespace}"
    user = meta.annotations.get(manifests.ANNOTATION_USER)
    if user is None:
        return None, f"no {manifests.ANNOTATION_USER} annotation"
    try:
        check_user_id(user)
    except InvalidUserId:
        return None, f"{manifests.ANNOTATION_USER} is not a person id"
    if meta.labels.get(manifests.LABEL_PERSON) != manifests.person_hash(user):
        return None, f"its {manifests.LABEL_PERSON} label is not {user}'s"
    expected = manifests.service_name(user) if obj.kind == "service" else manifests.pvc_name(user)
    if meta.name != expected:
        return None, f"named {meta.name}, not {expected} as {user}'s {obj.kind} would be"
    if not meta.uid:
        return None, "no uid to delete it by"
    return user, ""


def plan(
    objects: Iterable[AgentObject],
    people: Mapping[str, Person],
    now: float,
    anonymous_retention_s: float,
    namespace: str = manifests.NAMESPACE,
) -> Plan:
    """Which of ``objects`` go (pure): those of people who are gone, or anonymous and idle
    longer than the retention; nothing of a person ``people`` does not answer for."""
    delete: list[tuple[AgentObject, str]] = []
    refused: list[tuple[AgentObject, str]] = []
    kept = 0
    objects = list(objects)
    owners = {u for o in objects if (u := owner(o, namespace)[0]) is not None}
    answered = [people[u] for u in owners if u in people]
    if len(answered) >= IMPLAUSIBLY_EMPTY and not any(p.exists for p in answered):
        # nobody at all exists: far likelier a wrong or empty accounts database than
        # everyone leaving at once; nothing is deleted on that word
        why = f"the directory says none of {len(answered)} people exists (wrong database?)"
        return Plan([], [(o, why) for o in objects], 0)
    for obj in objects:
        user, why = owner(obj, namespace)
        if user is None:
            refused.append((obj, why))
            continue
        person = people.get(user)
        if person is None:
            refused.append((obj, f"the directory did not answer for {user}"))
        elif not person.exists:
            delete.append((obj, f"{user} deleted their account"))
        elif (
            person.anonymous
            and person.last_active_at is not None
            and now - person.last_active_at > anonymous_retention_s
        ):
            days = (now - person.last_active_at) / 86_400
            delete.append((obj, f"{user} is anonymous and idle for {days:.1f} days"))
        else:
            kept += 1
    return Plan(delete, refused, kept)


@dataclass
class AccountsPeople:
    """The people directory over the accounts database: an id without an account row is
    a person who deleted their account. (The platform has no anonymous accounts yet;
    when it gets them, this is where they are told apart.)"""

    engine: Engine

    async def lookup(self, users: set[str]) -> dict[str, Person]:
        return await asyncio.to_thread(self._lookup, users)

    def _lookup(self, users: set[str]) -> dict[str, Person]:
        from gateway.accounts.models import Account

        with Session(self.engine) as s:
            found = set(s.scalars(select(Account.id).where(Account.id.in_(users))))
        return {u: Person(exists=u in found) for u in users}


@dataclass(frozen=True)
class SweepReport:
    deleted: list[str]
    refused: list[str]
    kept: int


async def sweep_once(
    cluster: Cluster, people: People, anonymous_retention_s: float, now: float | None = None
) -> SweepReport:
    """One sweep: list the agent objects, ask who is gone, delete theirs."""
    services = await cluster.list_services(manifests.AGENT_SELECTOR)
    pvcs = await cluster.list_pvcs(manifests.AGENT_SELECTOR)
    objects = [AgentObject("service", s.metadata) for s in services]
    objects += [AgentObject("pvc", p.metadata) for p in pvcs]
    users = {u for o in objects if (u := owner(o, cluster.namespace)[0]) is not None}
    answers = await people.lookup(users) if users else {}
    decided = plan(
        objects,
        answers,
        time.time() if now is None else now,
        anonymous_retention_s,
        cluster.namespace,
    )
    deleted, gone_people = [], set()
    for obj, why in decided.delete:
        meta = obj.meta
        assert meta.uid is not None  # owner() checked
        try:
            if obj.kind == "service":
                await ignoring_not_found(cluster.delete_service(meta.name, meta.uid))
            else:
                await ignoring_not_found(cluster.delete_pvc(meta.name, meta.uid))
        except ClusterError as exc:
            log.error("agent object not deleted", kind=obj.kind, name=meta.name, error=str(exc))
            continue
        log.info("agent object deleted", kind=obj.kind, name=meta.name, why=why)
        deleted.append(f"{obj.kind}/{meta.name}")
        gone_people.add(meta.annotations[manifests.ANNOTATION_USER])
    for user in sorted(gone_people):  # their tokens go with them
        name = manifests.tokens_secret_name(user)
        try:
            if await ignoring_not_found(cluster.delete_secret(name)):
                deleted.append(f"secret/{name}")
        except ClusterError as exc:
            log.error("token secret not deleted", name=name, error=str(exc))
    refused = [f"{o.kind}/{o.meta.name}: {why}" for o, why in decided.refused]
    for line in refused:
        log.warning("agent object left alone", detail=line)
    return SweepReport(deleted, refused, decided.kept)


async def run(cfg: Settings, stop: asyncio.Event) -> None:
    """Sweep every ``knative.sweep_interval_s`` until ``stop`` is set."""
    from gateway.accounts.db import engine_for

    if not cfg.gateway.database_url:
        # an empty database of its own would say that everyone is gone
        raise ConfigError(
            "gateway.database_url is not set: the sweeper reads the gateway's accounts database"
        )
    people = AccountsPeople(engine_for(cfg.gateway.database_url))
    cluster = Cluster(cfg.knative)
    retention_s = cfg.knative.anonymous_retention_days * 86_400
    try:
        while not stop.is_set():
            try:
                report = await sweep_once(cluster, people, retention_s)
                log.info(
                    "swept",
                    deleted=len(report.deleted),
                    kept=report.kept,
                    refused=len(report.refused),
                )
            except Exception as exc:  # the next sweep tries again; nothing was decided blind
                log.error("sweep failed", error=repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), cfg.knative.sweep_interval_s)
            except TimeoutError:
                pass
    finally:
        await cluster.close()
        people.engine.dispose()


def main() -> None:
    cfg = load_config()
    setup_logging("lifecycle", cfg.log_level)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(cfg, stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
