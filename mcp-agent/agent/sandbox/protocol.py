"""What crosses the sandbox's pipes: the job in (stdin), the reply out (a pipe of its own).

Both are MessagePack, typed with msgspec like the platform's Kafka and ZeroMQ
messages, so neither side guesses the other's shapes. Values the person's code
makes (``result`` of ``run_python``) are arbitrary JSON by nature and travel
as JSON text. Files a job makes (a backtest's chart) come back as bytes in the
reply: the agent never opens a file the sandbox wrote.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Scalar = float | int | str | bool | None
#: A strategy parameter: a value, or a list of values to sweep.
ParamValue = Scalar | list[Scalar]
#: A backtest's figure (sharpe, total_return, trades…).
Figure = float | int | str | None

#: Where things are inside the sandbox's own mount namespace.
WORKSPACE = "/workspace"
INPUTS = "/inputs"
SCRATCH = "/scratch"


class PythonJob(msgspec.Struct, tag="python", frozen=True):
    """``run_python``: run ``code``; ``candles`` maps ``TICKER|tf`` to a parquet file in inputs."""

    code: str
    candles: dict[str, str] = {}
    filename: str = "<run_python>"


class ValidateJob(msgspec.Struct, tag="validate", frozen=True):
    """Import an indicator or strategy from ``code`` and run it on sample candles."""

    module: Literal["indicators", "strategies"]
    name: str
    code: str
    filename: str


class CostsSpec(msgspec.Struct, frozen=True):
    fee_rate: float = 0.001
    slippage: float = 0.0005
    initial_cash: float = 10_000.0


class BacktestJob(msgspec.Struct, tag="backtest", frozen=True):
    """Backtest ``strategy`` from the workspace over the candles file in inputs."""

    strategy: str
    candles: str
    bar_ms: int
    filename: str
    params: dict[str, ParamValue] = {}
    costs: CostsSpec = CostsSpec()
    rank_by: str = "sharpe"
    title: str = ""
    max_combinations: int = 200


class IndicatorJob(msgspec.Struct, tag="indicator", frozen=True):
    """Compute indicator ``name`` from the workspace over the candles file in inputs."""

    name: str
    candles: str
    filename: str
    params: dict[str, Scalar] = {}


Job = PythonJob | ValidateJob | BacktestJob | IndicatorJob


class SandboxSpec(msgspec.Struct, frozen=True):
    """Everything the sandboxed process is told, on its stdin."""

    job: Job
    memory_mb: int
    workspace: str = WORKSPACE
    inputs: str = INPUTS
    scratch: str = SCRATCH
    #: whether the audit hook also polices file paths (only without the kernel sandbox,
    #: whose mount namespace is the file policy)
    guard_files: bool = False


class PythonOutcome(msgspec.Struct, tag="python", frozen=True):
    #: the ``result`` the code set, as JSON text ("null" when it set none)
    result_json: str = "null"
    #: files the code made in its (discarded) scratch folder
    files: list[str] = []


class ValidationOutcome(msgspec.Struct, tag="validate", frozen=True):
    candles: int
    doc: str = ""
    #: an indicator's number of lines (None for strategies)
    lines: int | None = None


class TradeRow(msgspec.Struct, frozen=True, rename={"ret": "return"}):
    side: str
    entry_time: str
    exit_time: str
    entry_price: float
    exit_price: float
    quantity: float
    pnl: float
    ret: float
    reason: str


class BacktestOutcome(msgspec.Struct, tag="backtest", frozen=True):
    params: dict[str, ParamValue]
    mode: str
    figures: dict[str, Figure]
    trades: list[TradeRow]
    equity_curve: list[tuple[str, float]]
    chart_png: bytes | None = None


class SweepRow(msgspec.Struct, frozen=True):
    params: dict[str, ParamValue]
    figures: dict[str, Figure]


class SweepOutcome(msgspec.Struct, tag="sweep", frozen=True):
    rows: list[SweepRow]
    rank_by: str


class IndicatorLineOut(msgspec.Struct, frozen=True):
    """One line of an indicator: a value per candle (None where it has none yet)."""

    name: str
    values: list[float | None]


class IndicatorOutcome(msgspec.Struct, tag="indicator", frozen=True):
    lines: list[IndicatorLineOut]
    params: dict[str, ParamValue]


Outcome = PythonOutcome | ValidationOutcome | BacktestOutcome | SweepOutcome | IndicatorOutcome

#: How a run that did not finish its job failed: a limit, the policy, or the code itself.
FailureKind = Literal["memory", "policy", "error"]


class SandboxReply(msgspec.Struct, frozen=True):
    """The sandboxed process's last word: an outcome, or why there is none."""

    outcome: Outcome | None = None
    error: str | None = None
    failure: FailureKind | None = None


#: The descriptor a run reports how far it got on: lines of ``"<done> <total>\n"`` (a
#: sweep's combinations). The person's code could write there too; the parent only
#: shows what it reads, so at worst it misstates its own progress.
PROGRESS_FD_ENV = "DEXORDER_SANDBOX_PROGRESS_FD"


def progress_line(done: int, total: int) -> bytes:
    return f"{done} {total}\n".encode()


def parse_progress(line: bytes) -> tuple[int, int] | None:
    """``(done, total)`` from a progress line; None for anything else."""
    parts = line.split()
    if len(parts) != 2 or not all(p.isdigit() and len(p) < 10 for p in parts):
        return None
    done, total = int(parts[0]), int(parts[1])
    return (done, total) if 0 <= done <= total else None


#: A reply larger than this is refused (the parent reads at most this much).
MAX_REPLY_BYTES = 64 * 1024 * 1024

_job_encoder = msgspec.msgpack.Encoder()
_spec_decoder = msgspec.msgpack.Decoder(SandboxSpec)
_reply_decoder = msgspec.msgpack.Decoder(SandboxReply)


def encode(message: SandboxSpec | SandboxReply) -> bytes:
    return _job_encoder.encode(message)


def decode_spec(data: bytes) -> SandboxSpec:
    return _spec_decoder.decode(data)


def decode_reply(data: bytes) -> SandboxReply:
    """The reply; ``msgspec.DecodeError`` (a ``ValueError``) when it is not one."""
    return _reply_decoder.decode(data)
