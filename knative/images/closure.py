"""What each image must hold: the import closure of its entry modules.

``python knative/images/closure.py`` rewrites ``knative/images/requirements/<image>.txt``
(the third-party distributions the image's code imports, pinned to the versions of this
checkout's virtualenv); ``--check`` only says whether they are current (the tests call
:func:`closure` and :func:`requirements` directly).

The closure is static: every ``import`` in every first-party module reachable from the
entry modules, including imports inside functions (a lazy import still runs in the
image) and excluding ``if TYPE_CHECKING:`` blocks (never run). Imports the code makes by
name at run time (uvicorn's WebSocket implementation, pyiceberg's catalog drivers) are
listed per image in :data:`IMAGES` as ``extra``, each with its reason.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Source roots (pyproject's packages.find ``where``), searched in this order.
SOURCE_ROOTS = (ROOT, ROOT / "mcp-agent", ROOT / "functions")
#: The platform's own top-level packages.
FIRST_PARTY = frozenset(
    {"dexorder", "services", "streaming", "launcher", "agent", "gateway", "triggers"}
)
REQUIREMENTS_DIR = Path(__file__).resolve().parent / "requirements"


@dataclass(frozen=True)
class Image:
    """One container image: its entry modules (or files) and run-time-only imports."""

    name: str
    #: dotted modules (``gateway.__main__``) or repository-relative files (function folders)
    entries: tuple[str, ...]
    #: distributions imported by name at run time, with why
    extra: dict[str, str] = field(default_factory=dict)


#: Every function folder's main.py (functions-framework loads them by path).
_FUNCTION_FILES = tuple(
    str(p.relative_to(ROOT)) for p in sorted((ROOT / "functions").glob("*/main.py"))
)


def _serves_gateway_handlers(path: str) -> bool:
    """A function folder that runs the gateway's own HTTP handlers (auth, chat, Telegram):
    it is the gateway, deployed from the gateway image."""
    tree = ast.parse((ROOT / path).read_text())
    return any(
        isinstance(node, ast.ImportFrom) and node.module == "gateway.standalone"
        for node in ast.walk(tree)
    )


#: The CloudEvents functions: the functions image holds these alone, so that a function
#: scaled to zero starts from a small image (no model SDK, no lake, no LangGraph).
EVENT_FUNCTION_FILES = tuple(f for f in _FUNCTION_FILES if not _serves_gateway_handlers(f))
_ICEBERG_DRIVERS = {
    "psycopg2-binary": "pyiceberg's SQL catalog on PostgreSQL (lake.catalog_uri)",
    "sqlalchemy": "pyiceberg's SQL catalog",
    "pyarrow": "pyiceberg reads and writes Parquet through pyarrow",
}

IMAGES: dict[str, Image] = {
    image.name: image
    for image in (
        Image(
            "gateway",
            ("gateway.__main__", *_FUNCTION_FILES),
            {
                "websockets": "uvicorn's ws='websockets-sansio' (the WebSocket chat)",
                "psycopg2-binary": "the accounts database on PostgreSQL (gateway.database_url)",
                "psycopg-binary": "psycopg 3's libpq build: the chat checkpoints on PostgreSQL",
                **_ICEBERG_DRIVERS,
            },
        ),
        Image(
            "functions",
            EVENT_FUNCTION_FILES,
            {
                "functions-framework": "the entry point (FUNCTION_TARGET/FUNCTION_SOURCE)",
                "uvicorn": "functions-framework --asgi serves with uvicorn",
            },
        ),
        Image(
            "agent",
            # the sandbox's child runs as ``python -m agent.sandbox.child``
            ("agent.__main__", "agent.sandbox.child"),
            {
                **_ICEBERG_DRIVERS,
                "ta-lib": "the person's indicators and strategies import talib (the SDK's promise)",
                "matplotlib": "the person's code draws charts in the sandbox",
                "pandas": "the person's code works on DataFrames in the sandbox",
            },
        ),
        Image("relay", ("services.relay.__main__",)),
        Image("ingestor", ("services.ingestor.__main__",), dict(_ICEBERG_DRIVERS)),
        Image(
            "streaming",
            ("streaming.__main__", "streaming.lake_writer"),
            {
                **_ICEBERG_DRIVERS,
                # readers do without it (the agent, the gateway); without it the lake
                # writer's first commit failed in the built image (NotInstalledError)
                "pyiceberg-core": "pyiceberg writes the day partitions (DayTransform) with it",
            },
        ),
        Image("embedder", ("services.embedder.__main__",)),
        Image(
            "lifecycle",
            ("gateway.knative.sweeper",),
            {"psycopg2-binary": "the accounts database on PostgreSQL (gateway.database_url)"},
        ),
        Image("exchange-emulator", ("services.exchange_emulator.__main__",)),
    )
}


def _module_file(name: str) -> Path | None:
    """The source file of first-party module ``name`` (a package's ``__init__.py``)."""
    parts = name.split(".")
    for root in SOURCE_ROOTS:
        base = root.joinpath(*parts)
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
    return None


def _module_name(path: Path) -> str:
    """The dotted name of a first-party file under one of the source roots."""
    for root in sorted(SOURCE_ROOTS, key=lambda r: len(r.parts), reverse=True):
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)
    raise ValueError(f"{path} is under no source root")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, package: str) -> set[str]:
    """Dotted names ``path`` imports at run time (``from a import b`` gives a and a.b)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {name for name in found if name}


@dataclass
class Closure:
    """First-party files and third-party top-level modules reachable from the entries."""

    files: set[Path] = field(default_factory=set)
    third_party: set[str] = field(default_factory=set)

    @property
    def packages(self) -> set[str]:
        """What the image must copy, as repository paths: top-level packages, and one
        level further down in the folders that hold several parts (``services/relay``,
        ``functions/gateway``, ``mcp-agent/agent``)."""
        out: set[str] = set()
        for path in self.files:
            parts = path.relative_to(ROOT).parts
            nested = parts[0] in ("services", "functions", "mcp-agent")
            out.add("/".join(parts[:2]) if nested else parts[0])
        return out


def closure(image: Image) -> Closure:
    """The import closure of ``image``'s entries."""
    result = Closure()
    todo: list[Path] = []
    for entry in image.entries:
        path = ROOT / entry if entry.endswith(".py") else _module_file(entry)
        if path is None or not path.is_file():
            raise FileNotFoundError(f"{image.name}: entry {entry} not found")
        todo.append(path)
    stdlib = sys.stdlib_module_names
    while todo:
        path = todo.pop()
        if path in result.files:
            continue
        result.files.add(path)
        is_function_file = path.parent.parent == ROOT / "functions" and path.name == "main.py"
        name = "" if is_function_file else _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for imported in _imports(path, package):
            top = imported.split(".")[0]
            if top in FIRST_PARTY:
                parts = imported.split(".")
                for i in range(1, len(parts) + 1):  # parents run their __init__ first
                    found = _module_file(".".join(parts[:i]))
                    if found is not None:
                        todo.append(found)
            elif top not in stdlib and top != "__future__":
                result.third_party.add(top)
    return result


def distributions(modules: set[str]) -> set[str]:
    """The installed distributions providing these top-level modules (lower-case names)."""
    providers = metadata.packages_distributions()
    out: set[str] = set()
    for module in modules:
        names = providers.get(module)
        if not names:
            raise LookupError(f"no installed distribution provides {module!r}")
        out.update(n.lower() for n in names)
    return out


#: Where pip finds a version with a local label: PyPI holds none (``torch==2.13.0+cpu`` is on
#: PyTorch's own index only; from PyPI alone pip finds no such version and the build fails).
LOCAL_VERSION_INDEXES = {"cpu": "https://download.pytorch.org/whl/cpu"}


def requirements(image: Image) -> str:
    """``image``'s requirements file: its distributions pinned to the installed versions,
    after the index of any pinned local version (``+cpu``) PyPI does not hold."""
    names = distributions(closure(image).third_party) | set(image.extra)
    pins = {name: metadata.version(name) for name in names}
    lines = [
        f"# {image.name}: third-party imports of {', '.join(image.entries)}",
        "# generated by knative/images/closure.py from the import closure; do not edit",
    ]
    labels = sorted({v.partition("+")[2] for v in pins.values() if "+" in v})
    for label in labels:
        if label not in LOCAL_VERSION_INDEXES:
            raise LookupError(f"no index known for local versions +{label} (not on PyPI)")
        lines.append(f"# +{label} builds are not on PyPI")
        lines.append(f"--extra-index-url {LOCAL_VERSION_INDEXES[label]}")
    for name in sorted(names):
        why = image.extra.get(name)
        lines.append(f"{name}=={pins[name]}" + (f"  # {why}" if why else ""))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check they are current")
    args = parser.parse_args()
    stale = []
    REQUIREMENTS_DIR.mkdir(exist_ok=True)
    for image in IMAGES.values():
        path = REQUIREMENTS_DIR / f"{image.name}.txt"
        text = requirements(image)
        if not path.is_file() or path.read_text() != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        sys.exit(f"stale: {', '.join(stale)} (run python knative/images/closure.py)")


if __name__ == "__main__":
    main()
