"""The README's Debian/Ubuntu install, run verbatim on a fresh Debian, then started the way the
systemd unit starts it.

systemd itself cannot run here, so the unit is emulated: its `ExecStartPre` and `ExecStart`
run under its `User=` and `Group=`, with `LimitNOFILE=`, `NoNewPrivileges=yes`,
`ProtectSystem=strict` (the whole tree read-only), `ProtectHome=yes` (empty /home and /root)
and `PrivateTmp=yes`, in mount, PID and network namespaces of their own. Its seccomp-based
settings (`MemoryDenyWriteExecute=`, `RestrictAddressFamilies=`, `SystemCallArchitectures=`,
...) and `PrivateDevices=` are not emulated; `systemd-analyze verify` checks their syntax.

The fresh Debian is a debootstrap root (tests/debian.py); the install commands run in it with
the README's `sudo` as a no-op (everything runs as root) and a copy of the repository's
working tree as the checkout they expect.
"""

from __future__ import annotations

import re
import resource
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exporter.standins.simulator import WEBDEV_PATH
from tests.conftest import require_tool
from tests.debian import require_root, unpack_rootfs

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "ignition-exporter.service"
CHECKOUT = Path("/srv/ignition-exporter")  # inside the fresh Debian
GATEWAY_PORT = 8088
CHECKOUT_IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build",
                                         "dist", ".*_cache", ".hypothesis", "node_modules")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The block's `sudo`, as root: a no-op, and `sudo -u USER` runs the command as that user.
SUDO = 'sudo() { if [ "$1" = -u ]; then u=$2; shift 2; runuser -u "$u" -- "$@"; else "$@"; fi; }'


def readme_block(marker: str) -> str:
    """The fenced code block right after `<!-- MARKER -->` in the README."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {re.escape(marker)} -->\s*```\w*\n(.*?)```", text, re.DOTALL)
    assert match, f"README.md has no code block marked <!-- {marker} -->"
    return match.group(1)


def unit_settings() -> dict[str, str]:
    """The unit's `Key=value` lines (the last one wins, as in systemd for these keys)."""
    settings = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";")):
            settings[key.strip()] = value.strip()
    return settings


def run_in_namespace(script: str, *, network: bool, timeout: float) -> str:
    """Run a shell script as root in new mount and PID (and maybe network) namespaces: its
    mounts vanish with it, and whatever it started in the background dies with it, even when
    it fails half-way or is killed on timeout (--kill-child)."""
    unshare = [require_tool("unshare"), "--mount", "--pid", "--mount-proc", "--fork",
               "--kill-child", *([] if network else ["--net"])]
    result = subprocess.run([*unshare, "sh", "-euc", script], capture_output=True, text=True,
                            timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


def install(root: Path, config: str) -> None:
    """The README's commands, verbatim, in the fresh Debian at ROOT, from the checkout."""
    checkout = root / CHECKOUT.relative_to("/")
    shutil.copytree(ROOT, checkout, ignore=CHECKOUT_IGNORE)
    (checkout / "config.yml").write_text(config)
    inside = f"{SUDO}\ncd {CHECKOUT}\n{readme_block('install: debian')}"
    run_in_namespace(textwrap.dedent(f"""
        mount --rbind /dev {root}/dev
        mount --rbind /proc {root}/proc
        env -i PATH={PATH} HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \\
          chroot {root} sh -euxc {shlex.quote(inside)}
        """), network=True, timeout=900)


def account(root: Path, database: str, name: str) -> list[str]:
    """NAME's fields in the fresh Debian's /etc/passwd or /etc/group (made by the install)."""
    for line in (root / "etc" / database).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    pytest.fail(f"the install made no {database} entry {name!r}")


def unit_ids(root: Path) -> tuple[int, int]:
    """The UID of the unit's User= and the GID of its Group=, as the install made them."""
    unit = unit_settings()
    return int(account(root, "passwd", unit["User"])[2]), int(account(root, "group",
                                                                      unit["Group"])[2])


def gateway_command() -> str:
    """A simulated gateway answering the WebDev request, on loopback of the test's network."""
    code = ("from aiohttp import web; from exporter.standins.simulator import GatewaySimulator, "
            "simulator_app; web.run_app(simulator_app(GatewaySimulator(name='plant', "
            f"target_sessions=12)), host='127.0.0.1', port={GATEWAY_PORT}, print=None)")
    return f"cd {ROOT} && exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}"


CHECK = textwrap.dedent("""
    import sys, time, urllib.request
    out, deadline = sys.argv[1], time.monotonic() + 60
    while True:
        try:
            text = urllib.request.urlopen("http://127.0.0.1:9871/metrics", timeout=5).read()
        except OSError:
            text = b""
        if b'ignition_up{gateway="plant"} 1.0' in text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    health = urllib.request.urlopen("http://127.0.0.1:9871/healthz", timeout=5).status
    open(out + "/metrics.txt", "wb").write(text)
    open(out + "/healthz.txt", "w").write(str(health))
""")


def file_limit() -> int:
    """The unit's LimitNOFILE, or this machine's hard limit where that is lower: systemd sets
    limits with CAP_SYS_RESOURCE, which a test sandbox may not have."""
    return min(int(unit_settings()["LimitNOFILE"]), resource.getrlimit(resource.RLIMIT_NOFILE)[1])


def start_as_the_unit(root: Path, out: Path) -> str:
    """ExecStartPre, then ExecStart (in the background, checked, then sent SIGTERM), as the
    unit runs them. Writes what it saw to OUT; returns the script's output."""
    unit = unit_settings()
    assert unit["ProtectSystem"] == "strict" and unit["ProtectHome"] == "yes"
    assert unit["PrivateTmp"] == "yes" and "DynamicUser" not in unit
    assert unit["NoNewPrivileges"] == "yes"
    uid, gid = unit_ids(root)
    environment = (f"env -i PATH={PATH} LANG=C.UTF-8 USER={unit['User']} "
                   f"LOGNAME={unit['User']} HOME=/nonexistent")
    as_user = f"setpriv --no-new-privs {environment} chroot --userspec={uid}:{gid} {root}"
    return run_in_namespace(textwrap.dedent(f"""
        ip link set lo up
        mount --bind {root} {root}
        mount --rbind /dev {root}/dev
        mount --rbind /proc {root}/proc
        mount -t tmpfs -o mode=1777 tmpfs {root}/tmp
        mount -o remount,bind,ro {root}
        mount -t tmpfs -o ro,mode=0755 tmpfs {root}/home
        mount -t tmpfs -o ro,mode=0700 tmpfs {root}/root
        if touch {root}/etc/probe 2>/dev/null; then echo "the tree is writable" >&2; exit 1; fi
        test -z "$(ls -A {root}/root)" && test -z "$(ls -A {root}/home)"
        ( {gateway_command()} ) &
        gateway=$!
        ulimit -n {file_limit()}
        {as_user} {unit["ExecStartPre"]}
        {as_user} {unit["ExecStart"]} 2>{out}/exporter.log &
        exporter=$!
        {shlex.quote(sys.executable)} -c {shlex.quote(CHECK)} {out}
        grep -E '^(Uid|Gid):' /proc/$exporter/status > {out}/status.txt
        grep 'Max open files' /proc/$exporter/limits > {out}/limits.txt
        kill -TERM $exporter
        status=0; wait $exporter || status=$?
        echo $status > {out}/exit.txt
        kill $gateway
        """), network=False, timeout=180)


@pytest.mark.slow
def test_readme_install_gives_a_service_that_starts(tmp_path: Path) -> None:
    require_root()
    for tool in ("debootstrap", "chroot", "ip", "setpriv"):
        require_tool(tool)
    root = unpack_rootfs(tmp_path / "debian")
    config = f"gateways:\n  - name: plant\n    url: http://127.0.0.1:{GATEWAY_PORT}{WEBDEV_PATH}\n"
    install(root, config)
    out = tmp_path / "out"
    out.mkdir()
    output = start_as_the_unit(root, out)
    log = (out / "exporter.log").read_text(errors="replace")
    metrics = (out / "metrics.txt").read_text()
    assert 'ignition_up{gateway="plant"} 1.0' in metrics, output[-3000:] + log[-3000:]
    assert "ignition_perspective_sessions" in metrics
    assert (out / "healthz.txt").read_text() == "200"
    uid, gid = unit_ids(root)
    assert uid != 0 and gid != 0
    status = (out / "status.txt").read_text()
    assert re.search(rf"^Uid:\s+{uid}\s", status, re.MULTILINE), status
    assert re.search(rf"^Gid:\s+{gid}\s", status, re.MULTILINE), status
    assert int(unit_settings()["LimitNOFILE"]) >= 65536
    assert (out / "limits.txt").read_text().split()[3:5] == [str(file_limit())] * 2
    assert (out / "exit.txt").read_text().strip() == "0", log[-3000:]
