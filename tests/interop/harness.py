"""The test's own deployment on the shared stack: a topic prefix, a database and
consumer groups of its own, orderlog's commands run as processes, SQL through psql."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

import olclient

OL = os.environ.get("ORDERLOG_BIN") or os.path.join(olclient.SOURCE_DIR, "build", "orderlog")
BOOTSTRAP = os.environ.get("ORDERLOG_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
BASE_CONNINFO = os.environ.get(
    "ORDERLOG_PG_CONNINFO", "host=127.0.0.1 port=54329 dbname=orderlog user=postgres")


def conninfo_for(db):
    """BASE_CONNINFO with another database (key=value form: the last dbname counts)."""
    ci = BASE_CONNINFO
    if re.match(r"^postgres(ql)?://", ci):
        return ci + ("&" if "?" in ci else "?") + f"dbname={db}"
    return f"{ci} dbname={db}"


def psql(conninfo, sql, timeout=60):
    r = subprocess.run(["psql", conninfo, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                        "-c", sql], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"psql failed ({r.returncode}): {r.stderr.strip()}\n{sql}")
    return r.stdout


class Deployment:
    """Topics it_interop_<pid>_<name>_*, database it_interop_<pid>_<name>."""

    def __init__(self, name):
        self.name = f"it_interop_{os.getpid()}_{name}"
        self.prefix = self.name + "_"
        self.db = self.name
        self.conninfo = conninfo_for(self.db)
        self.dir = tempfile.mkdtemp(prefix=self.name + ".")
        self.procs = []
        self.bootstrap = BOOTSTRAP

    # -- lifecycle ---------------------------------------------------------
    def setup(self):
        psql(BASE_CONNINFO, f"drop database if exists {self.db} with (force)")
        psql(BASE_CONNINFO, f"create database {self.db}")
        self.run("migrate")
        self.run("topics", "create")
        return self

    def teardown(self):
        for p in list(self.procs):
            self.stop(p, check=False)
        try:
            self.run("topics", "delete", check=False)
        finally:
            psql(BASE_CONNINFO, f"drop database if exists {self.db} with (force)")
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- orderlog ----------------------------------------------------------
    def args(self, *args, group=None):
        a = [OL, *args, "-X", f"kafka.bootstrap.servers={self.bootstrap}",
             "-X", f"pg.conninfo={self.conninfo}", "-X", f"topic.prefix={self.prefix}"]
        if group:
            a += ["-X", f"consumer.group.id={self.prefix}{group}"]
        return a

    def run(self, *args, group=None, check=True, timeout=120, stdin=None):
        a = self.args(*args, group=group)
        r = subprocess.run(a, capture_output=True, text=True, timeout=timeout, input=stdin)
        if check and r.returncode != 0:
            raise AssertionError(f"{shlex.join(a)} exited {r.returncode}\n"
                                 f"stdout: {r.stdout[-3000:]}\nstderr: {r.stderr[-3000:]}")
        return r

    def start(self, role, *args, group=None):
        """A long-running command in the background, its output in files."""
        a = self.args(role, *args, group=group)
        out = open(os.path.join(self.dir, f"{role}.{len(self.procs)}.out"), "w+")
        err = open(os.path.join(self.dir, f"{role}.{len(self.procs)}.err"), "w+")
        p = subprocess.Popen(a, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        p.role, p.out, p.err, p.cmd = role, out.name, err.name, a
        self.procs.append(p)
        return p

    def output(self, p):
        return open(p.out).read() + open(p.err).read()

    def stop(self, p, check=True, timeout=60):
        """SIGTERM, then wait (bounded); a process that does not end is killed."""
        if p in self.procs:
            self.procs.remove(p)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                if check:
                    raise AssertionError(f"{p.role} did not stop within {timeout}s after SIGTERM")
        if check and p.returncode != 0:
            raise AssertionError(f"{p.role} exited {p.returncode}:\n{self.output(p)[-3000:]}")
        return p.returncode

    def wait_output(self, p, pattern, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output(p))
            if m:
                return m
            if p.poll() is not None:
                raise AssertionError(f"{p.role} exited {p.returncode} before printing "
                                     f"{pattern!r}:\n{self.output(p)[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"{p.role} did not print {pattern!r} within {timeout}s:\n"
                             f"{self.output(p)[-3000:]}")

    def check_alive(self, *procs):
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{p.role} exited {p.returncode}:\n{self.output(p)[-3000:]}")

    # -- Kafka and SQL -----------------------------------------------------
    def topic(self, t):
        return self.prefix + t

    def client(self, **kw):
        return olclient.Client(self.bootstrap, self.prefix, **kw)

    def read_all(self, *topics, timeout=60):
        return olclient.read_all(self.bootstrap, [self.topic(t) for t in topics], timeout)

    def follower(self, *topics, group):
        return olclient.Follower(self.bootstrap, [self.topic(t) for t in topics],
                                 self.prefix + group)

    def partitions(self, t):
        return olclient.partition_count(self.bootstrap, self.topic(t))

    def rows(self, sql):
        """The rows of a query as a list of dicts (through json)."""
        out = psql(self.conninfo, f"select coalesce(json_agg(q), '[]') from ({sql}) q").strip()
        return json.loads(out)

    def value(self, sql):
        return psql(self.conninfo, sql).strip()
