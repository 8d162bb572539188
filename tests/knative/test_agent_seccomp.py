"""The agent pod's seccomp profile (knative/base/seccomp/agent.json), proved offline.

Each case starts a pod-like process: its own mount namespace, uid 10001 (the agent
image's user), no capabilities at all, no new privileges, and the profile loaded into a
real kernel seccomp filter the way runc loads a pod's (tests/knative/seccomp_child.py).
Then the agent's real sandbox (bubblewrap + its own filter) is asked to start and run a
job that tries its way out.

* the runtime's default rules (Moby's default, flattened for no capabilities: what
  ``RuntimeDefault`` gives the agent pod) refuse bubblewrap its user namespace;
* the agent profile lets the sandbox start, and inside it the escape checks of
  tests/security still hold;
* a container runtime's ``/proc`` (what ``procMount: Default`` gives every container: its
  read-only ``/proc/sys``, ``/proc/bus``, ``/proc/fs``, ``/proc/irq``, its masked
  ``/proc/keys``, ``/proc/timer_list``…, emulated in ``_RUNTIME_PROC``) keeps bubblewrap
  from mounting the sandbox's fresh ``/proc`` even under the agent profile: the kernel
  refuses a new proc mount where parts of the old one are covered. So the profile is
  necessary, not sufficient (knative/README.md, "The person's code sandbox in an agent
  pod");
* with ``agent.sandbox.proc: none`` (what agent pods are configured with) bubblewrap mounts
  no ``/proc`` (nor writes ``/proc/sys``: no ``--disable-userns``) and the sandbox starts
  under that same ``/proc``: a Python job with numpy, pandas and TA-Lib and a backtest
  run, and the escape checks still hold.

Needs root (to make the pod-like process), unshare, setpriv, bwrap and libseccomp.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AGENT_UID = 10001
USERNS_LAUNCH = "tests/knative/userns_launch.py"
AGENT_IMAGE = "ghcr.io/dexorder/agent:0.1.0"

_spec = importlib.util.spec_from_file_location("seccomp_render", ROOT / "knative/seccomp/render.py")
assert _spec and _spec.loader
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "setpriv", "bwrap")),
    reason="needs root, unshare, setpriv and bwrap to build a pod-like process",
)


def test_the_rendered_profile_is_current() -> None:
    assert render.OUTPUT.read_text() == render.render(), "run python knative/seccomp/render.py"


def test_the_pods_name_the_profile_the_daemonset_installs() -> None:
    from gateway.knative import manifests as m
    from tests.knative.manifests import named, rendered

    objs = rendered("overlays/prod")
    config_map = named(objs, "ConfigMap", "dexorder-seccomp")
    assert json.loads(config_map["data"]["agent.json"]) == json.loads(render.OUTPUT.read_text())
    pod = named(objs, "DaemonSet", "seccomp-profile")["spec"]["template"]["spec"]
    host = next(v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v)
    # the kubelet's seccomp folder + the name the agent pods ask for
    assert f"{host}/agent.json" == f"/var/lib/kubelet/seccomp/{m.SECCOMP_PROFILE}"


def test_the_profile_adds_only_what_bubblewrap_needs() -> None:
    default = render.resolve(render.load_default())
    agent = json.loads(render.OUTPUT.read_text())

    def allowed(profile: dict[str, Any]) -> set[str]:
        return {
            n
            for r in profile["syscalls"]
            if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
            for n in r["names"]
        }

    assert allowed(agent) - allowed(default) == set(render.BWRAP)
    assert not {"setns", "bpf", "keyctl", "init_module", "open_by_handle_at"} & allowed(agent)


def _reachable_prefix_script() -> str:
    """Shell lines that make this interpreter reachable for uid 10001 in the child's own
    mount namespace: a folder on its path that others may not enter (e.g. /root holding
    pyenv) is covered by a tmpfs holding a bind of just the next folder down."""
    lines = []
    parts = Path(os.path.realpath(sys.executable)).parents
    for folder in reversed(parts):
        if folder == Path("/") or os.stat(folder).st_mode & 0o001:
            continue
        below = Path(os.path.realpath(sys.executable)).relative_to(folder).parts[0]
        lines += [
            "t=$(mktemp -d)",
            'mount -t tmpfs -o mode=755 tmpfs "$t"',
            f'mkdir "$t/{below}"',
            f'mount --bind {shlex.quote(str(folder / below))} "$t/{below}"',
            f'mount --move "$t" {shlex.quote(str(folder))}',
        ]
        break
    return "\n".join(lines)


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A workspace uid 10001 can read, beside a 'home' the sandbox must not see."""
    top = Path(tempfile.mkdtemp(prefix="agent-seccomp-"))
    try:
        ws = top / "workspace"
        ws.mkdir()
        (ws / "mine.py").write_text("X = 1\n")
        (top / "secret.pem").write_text("PLATFORM-SECRET")
        for p in (top, ws, ws / "mine.py"):
            os.chown(p, AGENT_UID, AGENT_UID)
        top.chmod(0o755)
        yield ws
    finally:
        shutil.rmtree(top)


#: What runc does to every container's /proc with procMount: Default, from the runtime's
#: default spec (Moby's and containerd's): its read-only paths bound read-only, its masked
#: paths covered (a folder by an empty read-only tmpfs, a file by /dev/null).
_RUNTIME_PROC = """
for p in /proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger; do
  if [ -e $p ]; then mount --bind $p $p; mount -o remount,bind,ro $p; fi
done
for p in /proc/asound /proc/acpi /proc/interrupts /proc/kcore /proc/keys \\
         /proc/latency_stats /proc/timer_list /proc/timer_stats /proc/sched_debug \\
         /proc/scsi /sys/firmware /sys/devices/virtual/powercap; do
  if [ -d $p ]; then mount -t tmpfs -o ro tmpfs $p
  elif [ -e $p ]; then mount --bind /dev/null $p; fi
done
"""


def _in_pod(
    profile: dict[str, Any],
    workspace: Path,
    *,
    runc_proc: bool = False,
    host_users: bool = True,
    proc: str = "mount",
) -> Any:
    """The child's report. ``runc_proc``: /proc as a runtime leaves it with ``procMount:
    Default``; ``host_users`` False: in a user namespace of its own, as with ``hostUsers:
    false`` (tests/knative/userns_launch.py); ``proc``: the agent's ``agent.sandbox.proc``."""
    profile_file = workspace.parent / "profile.json"
    profile_file.write_text(json.dumps(profile))
    script = "\n".join(
        [
            "set -e",
            _reachable_prefix_script(),
            _RUNTIME_PROC if runc_proc else "",
            f"cd {shlex.quote(str(ROOT))}",
            "exec "
            + ("" if host_users else f"{shlex.quote(sys.executable)} {USERNS_LAUNCH} ")
            + f"setpriv --reuid {AGENT_UID} --regid {AGENT_UID} --clear-groups"
            " --inh-caps=-all --ambient-caps=-all --bounding-set=-all --no-new-privs"
            f" env HOME={shlex.quote(str(workspace.parent))}"
            f" {shlex.quote(sys.executable)} tests/knative/seccomp_child.py"
            f" {shlex.quote(str(profile_file))} {shlex.quote(str(workspace))} {proc}",
        ]
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_root
def test_under_the_runtime_default_the_sandbox_cannot_start(workspace: Path) -> None:
    got = _in_pod(render.resolve(render.load_default()), workspace)
    assert got["available"] is False
    assert "No permissions to create new namespace" in got["reason"], got["reason"]


@needs_root
def test_under_the_agent_profile_the_sandbox_runs_and_holds(workspace: Path) -> None:
    got = _in_pod(json.loads(render.OUTPUT.read_text()), workspace)
    assert got["available"] is True, got["reason"]
    assert "run" in got, got.get("run_error")
    run = got["run"]
    # the sandbox's own filter still refuses namespaces, mounts and new processes (EPERM)
    assert (run["unshare"], run["mount"], run["fork"]) == (1, 1, 1)
    assert run["procs"] <= 3 and run["uid"] == 65534  # alone in its PID namespace
    assert run["home_seen"] is False  # the pod's files beyond the workspace are not in view
    assert run["workspace"] == "X = 1\n"


@needs_root
def test_with_host_users_false_and_an_unmasked_proc_the_sandbox_runs(workspace: Path) -> None:
    """What ``hostUsers: false`` + ``procMount: Unmasked`` would give (README: not settable
    through a Knative Service): the agent's uid 10001 is the host's 110001, the sandbox's
    user namespace nests in the pod's, and it holds."""
    got = _in_pod(json.loads(render.OUTPUT.read_text()), workspace, host_users=False)
    assert got["uid_map"] == ["0", "100000", "65536"]
    assert got["available"] is True, got["reason"]
    assert "run" in got, got.get("run_error")
    run = got["run"]
    assert (run["unshare"], run["mount"], run["fork"]) == (1, 1, 1)
    assert run["procs"] <= 3 and run["uid"] == 65534
    assert run["home_seen"] is False and run["workspace"] == "X = 1\n"


@needs_root
def test_a_runtime_masked_proc_still_stops_the_sandbox(workspace: Path) -> None:
    """The gap the profile does not close: see knative/README.md."""
    got = _in_pod(json.loads(render.OUTPUT.read_text()), workspace, runc_proc=True)
    assert got["available"] is False
    assert "Can't mount proc" in got["reason"], got["reason"]


@needs_root
def test_without_proc_the_sandbox_runs_under_a_runtime_masked_proc(workspace: Path) -> None:
    """``agent.sandbox.proc: none``, as agent pods are configured (knative/base/config/
    agents.yaml): no fresh /proc to mount, so the read-only /proc/sys no longer stops it."""
    from agent.sdk import sample_candles
    from agent.workspace import EXAMPLES

    (workspace / "strategies").mkdir()
    shutil.copy(EXAMPLES / "strategies" / "sma_cross.py", workspace / "strategies")
    inputs = workspace.parent / "inputs"
    inputs.mkdir()
    sample_candles().to_parquet(inputs / "candles.parquet")
    for p in (*workspace.rglob("*"), inputs, *inputs.iterdir()):
        os.chown(p, AGENT_UID, AGENT_UID)

    got = _in_pod(json.loads(render.OUTPUT.read_text()), workspace, runc_proc=True, proc="none")
    assert got["available"] is True, got["reason"]
    assert "run" in got, got.get("run_error")
    run = got["run"]
    assert (run["unshare"], run["mount"], run["fork"]) == (1, 1, 1)
    # no /proc at all; the PID namespace holds: ids 1-3 only, the agent's own not there
    assert run["proc"] is False and run["procs"] <= 3 and run["agent_seen"] is False
    assert run["uid"] == 65534
    assert run["home_seen"] is False and run["workspace"] == "X = 1\n"
    assert (run["sma"], run["frame"]) == (17.0, 3.0)  # numpy, pandas and TA-Lib work
    assert got["backtest"] == "ran"


# --- the gVisor option (knative/components/gvisor) ----------------------------------------


def test_the_gvisor_component_renders_a_valid_runtime_class(tmp_path: Path) -> None:
    """prod + the component, as an overlay that enables it would render."""
    from tests.knative.manifests import KNATIVE, agent_pod, named, pod_of, validate
    from tests.knative.test_manifests import _policy

    rel = Path(os.path.relpath(KNATIVE, tmp_path))
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{rel}/overlays/prod]\ncomponents: [{rel}/components/gvisor]\n"
    )
    out = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path)], check=True, capture_output=True, text=True
    ).stdout
    objs = tuple(d for d in yaml.safe_load_all(out) if d)
    for obj in objs:
        validate(obj)
    runtime_class = named(objs, "RuntimeClass", "gvisor")
    assert runtime_class["handler"] == "runsc"
    features = named(objs, "ConfigMap", "config-features")["data"]
    assert features["kubernetes.podspec-runtimeclassname"] == "enabled"

    from gateway.knative import manifests as m

    svc = m.agent_service("alice", m.DEFAULT_TIERS["free"], AGENT_IMAGE, runtime_class="gvisor")
    validate(svc)  # Knative's Service schema has runtimeClassName
    pod = pod_of(svc)
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert _policy().refusals(pod) == [] == _policy().refusals(agent_pod())
