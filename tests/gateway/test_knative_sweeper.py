"""The lifecycle sweeper: it removes the agent objects of people who are gone, and nothing
else — not an unlabelled object, not one whose labels disagree, not a live person's."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dexorder.config import KnativeConfig, Settings
from dexorder.tokens import new_keys
from gateway.accounts.db import engine_for, migrate
from gateway.accounts.store import Accounts
from gateway.knative import manifests as m
from gateway.knative.api import Cluster, Meta
from gateway.knative.provisioner import KnativeProvisioner
from gateway.knative.sweeper import (
    AccountsPeople,
    AgentObject,
    Kind,
    Person,
    owner,
    plan,
    sweep_once,
)
from tests.gateway.loopback_kubernetes import LoopbackKubernetes

DAY = 86_400.0
NOW = 1_800_000_000.0


def obj(user: str, kind: Kind = "service", **changes: object) -> AgentObject:
    name = m.service_name(user) if kind == "service" else m.pvc_name(user)
    meta = Meta(
        name=name,
        namespace=m.NAMESPACE,
        uid="uid-1",
        labels=m.labels(user, "free"),
        annotations={m.ANNOTATION_USER: user},
    )
    return AgentObject(kind, meta.model_copy(update=changes))


# --- the decision (pure) ---------------------------------------------------------------


def test_a_deleted_persons_objects_go_a_live_persons_stay() -> None:
    objects = [obj("alice"), obj("alice", "pvc"), obj("bob"), obj("bob", "pvc")]
    people = {"alice": Person(exists=True), "bob": Person(exists=False)}
    decided = plan(objects, people, NOW, 7 * DAY)
    assert [(o.kind, o.meta.name) for o, _ in decided.delete] == [
        ("service", m.service_name("bob")),
        ("pvc", m.pvc_name("bob")),
    ]
    assert decided.kept == 2 and decided.refused == []


def test_anonymous_people_go_after_their_retention() -> None:
    people = {
        "old": Person(exists=True, anonymous=True, last_active_at=NOW - 8 * DAY),
        "new": Person(exists=True, anonymous=True, last_active_at=NOW - 6 * DAY),
        "member": Person(exists=True, anonymous=False, last_active_at=NOW - 800 * DAY),
    }
    decided = plan([obj("old"), obj("new"), obj("member")], people, NOW, 7 * DAY)
    assert [(o.meta.name, why) for o, why in decided.delete] == [
        (m.service_name("old"), "old is anonymous and idle for 8.0 days")
    ]
    assert decided.kept == 2


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"labels": {}}, "not labelled as the platform's agent"),
        (
            {"labels": {**m.labels("bob"), m.LABEL_ROLE: "gateway"}},
            "not labelled as the platform's agent (dexorder.io/role)",
        ),
        ({"annotations": {}}, "no dexorder.io/user annotation"),
        ({"annotations": {m.ANNOTATION_USER: "../x"}}, "is not a person id"),
        ({"labels": m.labels("alice")}, "its dexorder.io/person label is not bob's"),
        ({"name": "dexorder-gateway"}, "named dexorder-gateway, not agent-bob-"),
        ({"namespace": "dexorder-system"}, "in namespace dexorder-system"),
        ({"uid": None}, "no uid"),
    ],
)
def test_an_object_that_does_not_say_consistently_whose_it_is_is_never_deleted(
    changes: dict[str, object], why: str
) -> None:
    suspect = obj("bob", "service", **changes)
    user, said = owner(suspect, m.NAMESPACE)
    assert user is None and why in said
    decided = plan([suspect], {"bob": Person(exists=False)}, NOW, 7 * DAY)
    assert decided.delete == [] and len(decided.refused) == 1


def test_a_person_the_directory_does_not_answer_for_keeps_everything() -> None:
    decided = plan([obj("bob")], {}, NOW, 7 * DAY)
    assert decided.delete == []
    assert "did not answer for bob" in decided.refused[0][1]


def test_a_directory_saying_nobody_exists_is_not_believed() -> None:
    """Three people with agents and not one exists: a wrong or empty accounts database,
    far likelier than everyone leaving at once. Two gone among a live one are believed."""
    objects = [obj(u) for u in ("ann", "ben", "cid")]
    decided = plan(objects, {u: Person(exists=False) for u in ("ann", "ben", "cid")}, NOW, DAY)
    assert decided.delete == [] and len(decided.refused) == 3
    assert "none of 3 people exists" in decided.refused[0][1]
    people = {"ann": Person(exists=False), "ben": Person(exists=False), "cid": Person(exists=True)}
    assert len(plan(objects, people, NOW, DAY).delete) == 2


async def test_the_sweeper_will_not_run_on_a_database_of_its_own(tmp_path: Path) -> None:
    import asyncio

    from dexorder.config import ConfigError
    from gateway.knative.sweeper import run

    cfg = Settings(home=tmp_path, knative=KnativeConfig(api_server="http://127.0.0.1:9"))
    with pytest.raises(ConfigError, match=r"gateway\.database_url is not set"):
        await run(cfg, asyncio.Event())


# --- a sweep against the loopback API server ------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[LoopbackKubernetes]:
    server = LoopbackKubernetes(ready_after_s=0.0)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    engine = engine_for(f"sqlite:///{tmp_path / 'accounts.db'}")
    migrate(engine)
    return Accounts(engine)


async def test_a_sweep_removes_the_agent_of_a_deleted_account_and_nothing_else(
    tmp_path: Path, api: LoopbackKubernetes, accounts: Accounts
) -> None:
    alice = accounts.sign_up("alice@example.com", "correct horse battery").id
    bob = accounts.sign_up("bob@example.com", "correct horse battery").id
    (tmp_path / "token").write_text(api.token)
    knative = KnativeConfig(api_server=api.url, token_file=str(tmp_path / "token"), ca_file=None)
    cfg = Settings(
        home=tmp_path / "home",
        agent={"token_private_key": new_keys().private_pem},
        knative=knative,
    )
    provisioner = KnativeProvisioner(cfg)
    try:
        for user in (alice, bob):
            await provisioner.ensure(user, "free")
    finally:
        await provisioner.close()
    # objects the sweeper must leave: bob's PVC's twin without labels (not even listed), and
    # a Service labelled as an agent that names bob but carries alice's person label
    stray = copy.deepcopy(api.get("persistentvolumeclaims", m.pvc_name(bob)))
    assert stray is not None
    stray["metadata"].update(name="bob-notes", labels={})
    api.put("persistentvolumeclaims", stray)
    liar = copy.deepcopy(api.get("services", m.service_name(alice)))
    assert liar is not None
    liar["metadata"].update(name="agent-impostor", annotations={m.ANNOTATION_USER: bob})
    api.put("services", liar)
    accounts.delete(bob)

    cluster = Cluster(knative)
    try:
        report = await sweep_once(cluster, AccountsPeople(accounts.engine), 7 * DAY)
    finally:
        await cluster.close()

    assert sorted(report.deleted) == sorted(
        [
            f"service/{m.service_name(bob)}",
            f"pvc/{m.pvc_name(bob)}",
            f"secret/{m.tokens_secret_name(bob)}",
        ]
    )
    for plural, name in [
        ("services", m.service_name(bob)),
        ("persistentvolumeclaims", m.pvc_name(bob)),
        ("secrets", m.tokens_secret_name(bob)),
    ]:
        assert api.get(plural, name) is None
    for plural, name in [
        ("services", m.service_name(alice)),
        ("persistentvolumeclaims", m.pvc_name(alice)),
        ("secrets", m.tokens_secret_name(alice)),
        ("persistentvolumeclaims", "bob-notes"),
        ("services", "agent-impostor"),
    ]:
        assert api.get(plural, name) is not None, name
    assert report.kept == 2
    assert report.refused == [f"service/agent-impostor: its {m.LABEL_PERSON} label is not {bob}'s"]


async def test_an_object_made_again_meanwhile_is_not_deleted(
    tmp_path: Path, api: LoopbackKubernetes
) -> None:
    """The deletion is conditional on the uid inspected: a Service made again between the
    listing and the deletion (the person came back) stays."""
    (tmp_path / "token").write_text(api.token)
    knative = KnativeConfig(api_server=api.url, token_file=str(tmp_path / "token"), ca_file=None)
    service = m.agent_service("carol", m.DEFAULT_TIERS["free"], "img")
    api.put("services", service)

    class RecreatedWhileAsked:
        async def lookup(self, users: set[str]) -> dict[str, Person]:
            again = api.get("services", m.service_name("carol"))
            assert again is not None
            again["metadata"]["uid"] = "made-again"
            return {u: Person(exists=False) for u in users}

    cluster = Cluster(knative)
    try:
        report = await sweep_once(cluster, RecreatedWhileAsked(), 7 * DAY)
    finally:
        await cluster.close()
    assert report.deleted == []
    assert api.get("services", m.service_name("carol")) is not None
