"""Each image's Dockerfile (knative/images/): slim base, multi-stage, not root, no build
tools, no bytecode, a health check, and exactly the code its entry point imports. No
Docker daemon here: the structure is what is checked (the README gives the build commands)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.knative.manifests import KNATIVE, ROOT, rendered

IMAGES_DIR = KNATIVE / "images"


def _closure() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_closure", IMAGES_DIR / "closure.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["image_closure"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


closure = _closure()
NAMES = sorted(closure.IMAGES)
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|build-essential|make|cmake|[a-z0-9]+-dev)\b")


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations
    joined and comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        ),
    )
    out: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        instruction, _, args = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            out.append([])
        out[-1].append((instruction.upper(), " ".join(args.split())))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_the_dockerfile_is_slim_multistage_and_not_root(name: str) -> None:
    path = IMAGES_DIR / f"{name}.Dockerfile"
    all_stages = stages(path)
    assert len(all_stages) >= 2, "multi-stage: build tools and pip stay in the build stage"
    for stage in all_stages:
        assert stage[0][1].split()[0] == "python:3.11-slim"
    final = all_stages[-1]
    users = [args for ins, args in final if ins == "USER"]
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (kubelet checks runAsNonRoot)"
    assert not any(u.split(":")[0] in ("0", "root") for u in users)
    env = " ".join(args for ins, args in final if ins == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert any(ins == "HEALTHCHECK" for ins, _ in final)
    for ins, args in final:
        if ins == "RUN":
            assert not BUILD_TOOLS.search(args), f"build tools in the final stage: {args}"
    assert ("COPY", "--from=build /opt/venv /opt/venv") in final
    # bytecode made at build time: the root filesystem is read-only at run time
    assert ("RUN", "python -m compileall -q /app") in final
    assert not any("--no-compile" in args for _, args in all_stages[0])
    build_copies = [args for ins, args in all_stages[0] if ins == "COPY"]
    assert build_copies == [f"knative/images/requirements/{name}.txt /tmp/requirements.txt"]


@pytest.mark.parametrize("name", NAMES)
def test_the_image_copies_exactly_what_its_entry_point_imports(name: str) -> None:
    image = closure.IMAGES[name]
    found = closure.closure(image)
    final = stages(IMAGES_DIR / f"{name}.Dockerfile")[-1]
    sources = [
        args.split()[0].rstrip("/")
        for ins, args in final
        if ins == "COPY" and not args.startswith("--from")
    ]
    files = {str(p.relative_to(ROOT)) for p in found.files}
    for file in files:
        assert any(file == s or file.startswith(s + "/") for s in sources), (
            f"{name}: {file} is imported but not copied"
        )
    for source in sources:
        assert any(f == source or f.startswith(source + "/") for f in files), (
            f"{name}: {source} is copied but nothing of it is imported"
        )
    entry = [args for ins, args in final if ins == "ENTRYPOINT"][-1]
    module = re.search(r'"-m", "([\w.]+)"', entry)
    if module:
        assert any(e.startswith(module.group(1)) for e in image.entries), entry
    else:
        assert "functions-framework" in entry and "functions-framework" in image.extra


@pytest.mark.parametrize("name", NAMES)
def test_the_requirements_are_the_import_closure(name: str) -> None:
    path = IMAGES_DIR / "requirements" / f"{name}.txt"
    assert path.read_text() == closure.requirements(closure.IMAGES[name]), (
        "stale: run python knative/images/closure.py"
    )


@pytest.mark.parametrize("name", NAMES)
def test_each_pinned_version_is_on_an_index_the_file_names(name: str) -> None:
    """PyPI holds no local versions (torch's ``+cpu`` build is on PyTorch's own index):
    built from PyPI alone, the embedder image failed ("No matching distribution found for
    torch==2.13.0+cpu"), so the file names the index of each local version it pins."""
    text = (IMAGES_DIR / "requirements" / f"{name}.txt").read_text()
    indexes = set(re.findall(r"^--extra-index-url (\S+)$", text, re.MULTILINE))
    for dist, version in re.findall(r"^([\w.-]+)==(\S+)", text, re.MULTILINE):
        if "+" in version:
            label = version.partition("+")[2]
            assert closure.LOCAL_VERSION_INDEXES.get(label) in indexes, f"{dist}=={version}"
    assert indexes <= set(closure.LOCAL_VERSION_INDEXES.values())


def test_the_lake_writer_image_can_write_day_partitions() -> None:
    """pyiceberg writes the lake's day partitions through pyiceberg_core, which it imports
    by name (the static closure cannot see it): without it the lake writer's first commit
    failed in the built streaming image (NotInstalledError)."""
    image = closure.IMAGES["streaming"]
    assert "streaming.lake_writer" in image.entries
    assert "pyiceberg-core" in image.extra
    text = (IMAGES_DIR / "requirements" / "streaming.txt").read_text()
    assert re.search(r"^pyiceberg-core==", text, re.MULTILINE)


def test_every_platform_image_the_manifests_run_has_a_dockerfile() -> None:
    images = set()
    for overlay in ("overlays/dev", "overlays/prod"):
        text = repr(rendered(overlay))
        images |= set(re.findall(r"ghcr\.io/dexorder/([a-z-]+)[:@]", text))
    images.discard("flink-job")  # knative/flink/ (the Flink issue) builds it
    missing = {i for i in images if not (IMAGES_DIR / f"{i}.Dockerfile").is_file()}
    assert not missing
    assert "agent" in NAMES and "lifecycle" in NAMES


def test_each_function_runs_from_the_image_that_holds_it() -> None:
    for path in sorted((ROOT / "functions").glob("*/func.yaml")):
        data = yaml.safe_load(path.read_text())
        main = f"functions/{path.parent.name}/main.py"
        if main in closure.EVENT_FUNCTION_FILES:
            assert data["image"].startswith("ghcr.io/dexorder/functions:"), path
            env = {e["name"]: e["value"] for e in data["run"]["envs"]}
            assert env["FUNCTION_SOURCE"] == f"/app/{main}", path
        else:  # the gateway's own handlers: the gateway image serves them
            assert data["image"].startswith("ghcr.io/dexorder/gateway:"), path
    for obj in rendered("overlays/prod"):
        if obj["kind"] != "Service" or obj["apiVersion"] != "serving.knative.dev/v1":
            continue
        (container,) = obj["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if "FUNCTION_SOURCE" in env:
            assert container["image"].startswith("ghcr.io/dexorder/functions:")
            assert env["FUNCTION_SOURCE"].removeprefix("/app/") in closure.EVENT_FUNCTION_FILES
