"""The systemd units of ops/systemd, met by systemd's own parser and run the way
systemd runs them.

`cmake --install` puts the binary and the units under a staging prefix;
`systemd-analyze verify` reads them (with their drop-ins) and must have
nothing to say: no unknown key, no bad value, an ExecStart that is there.
Then each long-running role is started with the unit's ExecStart (%i = the
role), its Environment and its EnvironmentFile, and the configuration file
the unit names; it must become ready, and end with status 0 within the
unit's TimeoutStopSec once sent the unit's KillSignal. A configuration error
must end with a status of RestartPreventExitStatus (systemd does not restart
a role that cannot start), and the migrate unit's command must apply the
migrations."""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import harness

BUILD_DIR = os.environ.get("ORDERLOG_BUILD_DIR") or os.path.dirname(harness.OL)
ROLES = ("decide", "guard", "project", "gate")


def key_values(path, comments="#;"):
    """The KEY=VALUE lines of a file systemd reads, blanks and comments skipped."""
    for line in open(path):
        line = line.strip()
        if line and line[0] not in comments:
            key, _, value = line.partition("=")
            yield key.strip(), value.strip()


def unit_settings(path):
    """Key -> list of values of a unit file (sections ignored), drop-ins not included."""
    settings = {}
    for key, value in key_values(path, comments="#;["):
        settings.setdefault(key, []).append(value)
    return settings


def environment_file(path):
    """What systemd reads from an EnvironmentFile: KEY=VALUE lines, quotes removed."""
    env = {}
    for key, value in key_values(path):
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze not found (ops/stack install installs Debian's systemd package)")
    prefix = str(tmp_path_factory.mktemp("prefix"))
    r = subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", prefix], capture_output=True, text=True)
    assert r.returncode == 0, f"cmake --install failed:\n{r.stdout}\n{r.stderr}"
    return prefix


def test_systemd_analyze_verify_finds_nothing_to_say(installed):
    units = os.path.join(installed, "lib", "systemd", "system")
    for f in ("orderlog@.service", "orderlog-migrate.service", "orderlog@gate.service.d/migrate.conf",
              "orderlog@project.service.d/migrate.conf"):
        assert os.path.isfile(os.path.join(units, f)), f"cmake --install did not install {f}"
    template = unit_settings(os.path.join(units, "orderlog@.service"))
    assert template["ExecStart"] == [f"{installed}/bin/orderlog %i"]
    # decide.instance is the host's name: the decides of two hosts never share transactional ids
    assert template["Environment"] == [f"ORDERLOG_CONFIG={installed}/etc/orderlog/orderlog.conf",
                                       "ORDERLOG_DECIDE_INSTANCE=%H"]
    names = [f"orderlog@{r}.service" for r in ROLES] + ["orderlog-migrate.service"]
    # a trailing ':' appends systemd's own unit directories (network-online.target, ...)
    env = dict(os.environ, SYSTEMD_UNIT_PATH=units + ":")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        f"systemd-analyze verify (exit {r.returncode}):\n{r.stdout}{r.stderr}"
    # the drop-ins: project and gate need the schema that migrate applies
    for role in ("project", "gate"):
        dropin = unit_settings(os.path.join(units, f"orderlog@{role}.service.d", "migrate.conf"))
        assert dropin["Requires"] == ["orderlog-migrate.service"] and dropin["After"] == ["orderlog-migrate.service"]


def write_config(installed, d, env_lines):
    """The files the unit names: the configuration (no secret) and the environment file."""
    etc = os.path.join(installed, "etc", "orderlog")
    os.makedirs(etc, exist_ok=True)
    with open(os.path.join(etc, "orderlog.conf"), "w") as f:
        f.write(f"kafka.bootstrap.servers = {d.bootstrap}\n"
                f"topic.prefix = {d.prefix}\n"
                "http.listen = 127.0.0.1:0\n"
                "gate.listen = 127.0.0.1:0\n")
    with open(os.path.join(etc, "orderlog.env"), "w") as f:
        f.write("# read by systemd as root: the secrets\n" + "".join(line + "\n" for line in env_lines))
    os.chmod(os.path.join(etc, "orderlog.env"), 0o600)


def as_systemd_runs(installed, unit, instance, d):
    """The command line and environment systemd gives the unit's process."""
    s = unit_settings(os.path.join(installed, "lib", "systemd", "system", unit))
    def specifiers(text):
        return text.replace("%i", instance).replace("%H", socket.gethostname())

    argv = shlex.split(specifiers(s["ExecStart"][0]))
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    for e in s.get("Environment", []):
        key, _, value = specifiers(e).partition("=")
        env[key] = value
    for e in s.get("EnvironmentFile", []):
        path = e.lstrip("-")
        if os.path.exists(path):
            env.update(environment_file(path))
        else:
            assert e.startswith("-"), f"{unit}: EnvironmentFile {path} is missing"
    return argv, env, s


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def test_each_role_runs_from_its_unit_and_stops_cleanly_on_its_kill_signal(installed, deployment):
    d = deployment("units")
    # the conninfo (a password in a real deployment) comes from the environment file
    write_config(installed, d, [f'ORDERLOG_PG_CONNINFO="{d.conninfo}"'])
    # the configuration a role gets from the unit: the file's, the environment file's, and
    # decide.instance from the host's name
    argv, env, _ = as_systemd_runs(installed, "orderlog@.service", "decide", d)
    shown = subprocess.run([argv[0], "config"], env=env, capture_output=True, text=True, timeout=30).stdout
    assert f"decide.instance = {socket.gethostname()}" in shown.splitlines(), shown
    assert f"topic.prefix = {d.prefix}" in shown.splitlines(), shown
    for role in ROLES:
        argv, env, s = as_systemd_runs(installed, "orderlog@.service", role, d)
        out = open(os.path.join(d.dir, f"unit-{role}.out"), "w+")
        p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            pattern = r"gate listening on (http://[0-9.:]+)" if role == "gate" else r"http listening on (http://[0-9.:]+)"
            deadline, url = time.monotonic() + 60, None
            while time.monotonic() < deadline:
                m = re.search(pattern, open(out.name).read())
                if m and get(m.group(1) + "/readyz") == 200:
                    url = m.group(1)
                    break
                assert p.poll() is None, f"{role} exited {p.returncode}:\n{open(out.name).read()[-3000:]}"
                time.sleep(0.2)
            assert url, f"{role} not ready within 60 s:\n{open(out.name).read()[-3000:]}"
            signum = getattr(signal, s["KillSignal"][0])
            stop_s = float(s["TimeoutStopSec"][0])
            t0 = time.monotonic()
            p.send_signal(signum)
            p.wait(stop_s)
            took = time.monotonic() - t0
            assert p.returncode == 0, f"{role} exited {p.returncode} on {s['KillSignal'][0]}:\n" \
                f"{open(out.name).read()[-3000:]}"
            assert took < stop_s
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        # the secret never shows in what the journal would get
        assert "ORDERLOG_PG_CONNINFO" not in open(out.name).read()


def test_a_configuration_error_ends_with_the_status_systemd_does_not_restart(installed, deployment):
    d = deployment("unitsbad")
    write_config(installed, d, ["ORDERLOG_DECIDE_WORKERS=0"])
    argv, env, s = as_systemd_runs(installed, "orderlog@.service", "decide", d)
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    no_restart = [int(x) for x in s["RestartPreventExitStatus"][0].split()]
    assert r.returncode in no_restart, f"exit {r.returncode}, want one of {no_restart}:\n{r.stderr[-2000:]}"
    assert "decide.workers" in r.stderr


def test_the_migrate_unit_applies_the_migrations(installed, deployment):
    d = deployment("unitsmig")
    harness.psql(harness.BASE_CONNINFO, f"drop database if exists {d.db}_m with (force)")
    harness.psql(harness.BASE_CONNINFO, f"create database {d.db}_m")
    try:
        write_config(installed, d, [f'ORDERLOG_PG_CONNINFO="{harness.conninfo_for(d.db + "_m")}"'])
        argv, env, s = as_systemd_runs(installed, "orderlog-migrate.service", "", d)
        assert s["Type"] == ["oneshot"] and s["RemainAfterExit"] == ["yes"]
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"migrate exited {r.returncode}:\n{r.stderr[-2000:]}"
        n = harness.psql(harness.conninfo_for(d.db + "_m"), "select count(*) from schema_migrations").strip()
        want = len([f for f in os.listdir(os.path.join(os.environ["ORDERLOG_SOURCE_DIR"], "migrations"))
                    if f.endswith(".sql")])
        assert int(n) == want
    finally:
        harness.psql(harness.BASE_CONNINFO, f"drop database if exists {d.db}_m with (force)")
