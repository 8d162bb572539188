"""The skills: each a prompt, a tool allowlist and a typed output, found in this package.

A skill is offered to the model as the tool ``skill_<name>`` (its arguments: the skill's
input model) and is picked by :func:`choose` for a plain request that asks for it. Running
one: the calls it always needs are made first (``gather``), then the model, scoped to the
skill's tools and budget, finishes with the ``answer`` tool in the skill's output shape.
Without a model (the offline model) ``offline`` builds that answer from what was gathered.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from dexorder.contracts.chat import JsonObject
from gateway.harness.agent_link import ToolOutcome
from gateway.harness.model import ToolCall, ToolSpec
from gateway.harness.reports import Report
from gateway.harness.subagents.loop import Delegation, Scope, run_scoped

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=Report)
T = TypeVar("T")

PREFIX = "skill_"

#: What a skill's gathering found: each call's tool and outcome, in order.
Gathered = list[tuple[str, ToolOutcome]]
Call = Callable[[str, JsonObject], Awaitable[ToolOutcome]]


@dataclass(frozen=True)
class Skill(Generic[In, Out]):
    name: str
    #: what the model is told the tool does
    description: str
    #: the skill's system prompt
    prompt: str
    tools: frozenset[str]
    input: type[In]
    output: type[Out]
    #: the calls it always needs, made before the model is asked (``call`` runs one)
    gather: Callable[[In, Call], Awaitable[Gathered]]
    #: its answer from what was gathered, without a model
    offline: Callable[[In, Gathered], Out]
    #: plain requests that ask for it
    asks: re.Pattern[str]
    max_rounds: int = 4
    max_tokens: int = 40_000

    @property
    def tool_name(self) -> str:
        return PREFIX + self.name

    @property
    def scope(self) -> Scope:
        return Scope(f"the skill {self.name}", self.tools, self.max_rounds, self.max_tokens)

    def spec(self) -> ToolSpec:
        return ToolSpec(self.tool_name, self.description, self.input.model_json_schema())

    async def run(self, d: Delegation, args: JsonObject) -> ToolOutcome:
        try:
            given = self.input.model_validate(args)
        except ValidationError as exc:
            wrong = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            return ToolOutcome(f"{self.tool_name}: invalid arguments: {wrong}", is_error=True)

        async def call(tool: str, arguments: JsonObject) -> ToolOutcome:
            refused = self.scope.refusal(tool)
            if refused is not None:  # a skill's own gathering is held to its allowlist too
                return ToolOutcome(refused, is_error=True)
            return await d.run_tool(ToolCall(f"call_{uuid.uuid4().hex[:12]}", tool, arguments))

        gathered = await self.gather(given, call)
        if d.model.offline:
            return ToolOutcome(self.offline(given, gathered))
        found = "\n\n".join(
            f"### {tool}{' (failed)' if o.is_error else ''}\n{o.as_text()[:20_000]}"
            for tool, o in gathered
        )
        request = (
            f"Request: {given.model_dump_json()}\n\nWhat the tools returned:\n\n{found}\n\n"
            "Finish by calling `answer`."
        )
        done = await run_scoped(d, self.scope, self.prompt, request, self.output)
        if done.answer is None:
            why = done.stopped or "it finished without calling answer"
            return ToolOutcome(f"{self.tool_name} gave no answer: {why}", is_error=True)
        return ToolOutcome(done.answer)  # type: ignore[arg-type]  # an Out, a Report


AnySkill = Skill[Any, Any]


def discover(package: str) -> dict[str, AnySkill]:
    """The skills of ``package`` by tool name: each of its modules' ``SKILL``."""
    found: dict[str, AnySkill] = {}
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        skill = getattr(module, "SKILL", None)
        if isinstance(skill, Skill):
            if skill.tool_name in found:
                raise ValueError(f"two skills named {skill.name} in {package}")
            found[skill.tool_name] = skill
    return dict(sorted(found.items()))


@cache
def skills() -> dict[str, AnySkill]:
    """Every skill of this package, by its tool name."""
    return discover(__package__ or "gateway.harness.skills")


def choose(text: str) -> AnySkill | None:
    """The skill a plain request asks for, if one does."""
    return next((s for s in skills().values() if s.asks.search(text)), None)


def first(gathered: Gathered, kind: type[T]) -> T | None:
    """The first result of type ``kind`` among what was gathered (None if none)."""
    return next((o.value for _, o in gathered if isinstance(o.value, kind)), None)
