"""A RabbitMQ node of the harness's own, run from the rabbitmq-server release script.

Own node name, ports, epmd (ERL_EPMD_PORT), cookie (HOME) and data dir, so it runs beside
any other node on the machine, and never touches the machine's node (5672) or epmd (4369).
The cluster provider builds on this class: it hands each node a shared epmd port and cookie.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from harness.brokers import plugins, procs
from harness.brokers.base import (
    Broker,
    BrokerError,
    BrokerNotFound,
    BrokerSettings,
    amqp_url_for,
    env,
)
from harness.ports import free_ports, port_free, release_ports

log = logging.getLogger(__name__)

DEBIAN_RELEASE_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def _is_debian_wrapper(path: Path) -> bool:
    # /usr/sbin/rabbitmq-server links to a wrapper that switches to the rabbitmq user.
    real = path.resolve()
    return real.name == "rabbitmq-script-wrapper" or real.parent == Path("/usr/sbin")


def no_script(settings: BrokerSettings) -> str:
    """Why no local node can be had: which script was looked for."""
    where = settings.server_script or env("RABBITMQ_SERVER")
    return "no rabbitmq-server release script " + (f"at {where}" if where else "found")


def find_server_script(server_script: str | None = None) -> str | None:
    """Path of a rabbitmq-server release script, or None; never the Debian wrapper.

    An explicit `server_script` (or env RABBITMQ_SERVER) is used as given, without searching.
    """
    explicit = server_script or env("RABBITMQ_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    candidates = []
    if conda := env("CONDA_PREFIX"):
        candidates.append(Path(conda) / "bin" / "rabbitmq-server")
    candidates.append(Path(DEBIAN_RELEASE_SCRIPT))
    if on_path := shutil.which("rabbitmq-server"):
        candidates.append(Path(on_path))
    for path in candidates:
        if os.access(path, os.X_OK) and not _is_debian_wrapper(path):
            return str(path)
    return None


def _tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    """The last lines of a log file written after byte `offset`."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class LocalBroker(Broker):
    """A RabbitMQ node of our own (also one node of a `LocalCluster`).

    Args:
        settings: broker settings (node name, credentials, timeouts).
        workdir: the node's folder, kept at close (default: a temporary one, removed).
        ports: (amqp, management, distribution) ports (default: free ones).
        epmd_port: the private epmd port (default: a free one; a cluster shares one).
        cookie: the Erlang cookie (default: random; a cluster shares one).
        standalone: False for a cluster's member: the cluster, not the node, registers for
            cleanup at exit and stops the shared epmd.
        host: the address the node listens on (a cluster in namespaces gives each its own).
        command_prefix: runs the node and its rabbitmqctl inside a network namespace.
        extra_conf: more rabbitmq.conf lines (a cluster sets its partition handling).
        extra_erl_args: more Erlang VM arguments for the node (e.g. "-kernel net_ticktime 10").
    """

    provider = "local"

    def __init__(self, settings: BrokerSettings | None = None,
                 workdir: str | Path | None = None, *,
                 ports: tuple[int, int, int] | None = None, epmd_port: int | None = None,
                 cookie: str | None = None, standalone: bool = True,
                 host: str = "127.0.0.1", command_prefix: list[str] | None = None,
                 extra_conf: str = "", extra_erl_args: str = "") -> None:
        super().__init__(settings)
        s = self.settings
        script = find_server_script(s.server_script)
        if script is None:
            raise BrokerNotFound(no_script(s))
        self.server_script = script
        self.node = s.node_name or f"lab-{secrets.token_hex(3)}@localhost"
        self._own_dir = workdir is None
        if workdir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="rabbit-lab-"))
        else:
            self.base_dir = Path(workdir).resolve()
            self.base_dir.mkdir(parents=True, exist_ok=True)
        self._reserved: list[int] = []  # ports we picked, given back at close
        if ports is None or epmd_port is None:
            picked = self._reserved = free_ports(4)
            amqp, management = picked[0], picked[1]
            # `harness up` asks for the documented ports: taken only when nobody holds them.
            if s.amqp_port and port_free(s.amqp_port):
                amqp = s.amqp_port
            if s.management_port and port_free(s.management_port):
                management = s.management_port
            ports = ports or (amqp, management, picked[2])
            epmd_port = epmd_port or picked[3]
        self.amqp_port, self.management_port, self.dist_port = ports
        self.epmd_port = epmd_port
        if self.epmd_port == procs.SYSTEM_EPMD_PORT:
            raise ValueError("epmd port 4369 belongs to the machine's own epmd")
        self.standalone = standalone
        self.host = host
        self.command_prefix = list(command_prefix or [])
        self.extra_conf = extra_conf
        self.extra_erl_args = extra_erl_args
        self.amqp_url = amqp_url_for(s.username, s.password, host, self.amqp_port)
        self.management_url = f"http://{host}:{self.management_port}"
        self.log_path = self.base_dir / "node.log"
        self.plugins_dir = plugins.trimmed_plugins_dir(script, self.base_dir / "plugins")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._epmd_pid: int | None = None
        self._write_files(cookie)

    def __repr__(self) -> str:
        return f"<LocalBroker {self.node} {self.amqp_url} dir={self.base_dir}>"

    @property
    def name(self) -> str:
        """The Erlang node name, e.g. lab-1a2b3c@localhost."""
        return self.node

    @property
    def home(self) -> Path:
        """The node's HOME (its cookie); beam's command line carries it as `-home DIR`."""
        return self.base_dir / "home"

    @property
    def nodes(self) -> tuple[LocalBroker, ...]:
        """Just this node."""
        return (self,)

    def _write_files(self, cookie: str | None) -> None:
        s, b = self.settings, self.base_dir
        for sub in ("home", "mnesia", "log", "conf.d"):
            (b / sub).mkdir(exist_ok=True)
        cookie_file = self.home / ".erlang.cookie"
        if not cookie_file.exists():  # kept across restarts: rabbitmqctl needs the same one
            cookie_file.write_text(cookie or secrets.token_hex(16))
            cookie_file.chmod(0o400)
        (b / "enabled_plugins").write_text(f"[{','.join(plugins.ENABLED)}].\n")
        (b / "rabbitmq-env.conf").write_text("")
        (b / "advanced.config").write_text("[].\n")
        (b / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.host}:{self.amqp_port}\n"
            f"management.tcp.ip = {self.host}\n"
            f"management.tcp.port = {self.management_port}\n"
            "loopback_users.guest = false\n"
            f"default_user = {s.username}\n"
            f"default_pass = {s.password}\n"
            # Fresh management stats (about 1 s behind instead of 5-10 s): a short interval
            # alone does not do it; one-second samples kept for a minute do.
            f"collect_statistics_interval = {s.stats_interval_ms}\n"
            "management.sample_retention_policies.global.minute = 1\n"
            "management.sample_retention_policies.basic.minute = 1\n"
            "management.sample_retention_policies.detailed.10 = 1\n"
            + self.extra_conf
        )

    def _env(self) -> dict[str, str]:
        """Environment that isolates this node; also what rabbitmqctl needs (HOME: cookie)."""
        b = self.base_dir
        # Inherited RABBITMQ_*/ERL_* settings would point the node at someone else's setup.
        out = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        script_dir = str(Path(self.server_script).parent)
        out.update(
            PATH=os.pathsep.join([script_dir, out.get("PATH", "")]),  # conda: erl sits beside it
            HOME=str(self.home),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS=self.host,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(b / "mnesia"),
            RABBITMQ_LOG_BASE=str(b / "log"),
            RABBITMQ_LOGS="-",
            RABBITMQ_CONFIG_FILE=str(b / "rabbitmq.conf"),
            RABBITMQ_CONFIG_FILES=str(b / "conf.d"),  # not /etc/rabbitmq/conf.d
            RABBITMQ_ADVANCED_CONFIG_FILE=str(b / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(b / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(b / "rabbitmq-env.conf"),
            RABBITMQ_PID_FILE=str(b / "rabbitmq.pid"),
            # Distribution and epmd on our address only; both listen on 0.0.0.0 otherwise.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface "
                                                "{" + self.host.replace(".", ",") + "} "
                                                + self.extra_erl_args,
            ERL_EPMD_PORT=str(self.epmd_port),
            # The node registers with its epmd over loopback, peers reach it on `host`.
            ERL_EPMD_ADDRESS=",".join(dict.fromkeys(("127.0.0.1", self.host))),
        )
        if self.plugins_dir is not None:
            out["RABBITMQ_PLUGINS_DIR"] = str(self.plugins_dir)
        if "@" in self.node and "." in self.node.split("@", 1)[1]:
            out["RABBITMQ_USE_LONGNAME"] = "true"  # node names like clu1@10.213.7.1
        return out

    @property
    def launched(self) -> bool:
        """True while the launched wrapper runs (cheap: no process scan)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def running(self) -> bool:
        """True while a process of this node is alive."""
        return self._proc is not None and bool(self._node_pids())

    def _node_pids(self) -> list[int]:
        """The node's own processes: its session, plus any beam still carrying its HOME."""
        if self._proc is None:
            return []
        self._proc.poll()  # reap the wrapper so it does not linger as a zombie
        return sorted(set(procs.session_members(self._proc.pid))
                      | set(procs.with_argument(str(self.home))))

    def pids(self) -> list[int]:
        """Process ids of this node: wrapper, beam.smp and helpers, plus its own epmd."""
        pids = self._node_pids()
        epmd = procs.epmd_for_port(self.epmd_port)
        if epmd is not None and epmd not in pids:
            pids.append(epmd)
        return pids

    def launch(self) -> None:
        """Launch the node's process without waiting for it to take connections."""
        with self._lock:
            if self._closed:
                raise BrokerError("this broker is closed; open a new one")
            if self.running:
                return
            # A node still going down holds the dist port: starting now would fail to boot.
            if not self._wait_down(self.settings.stop_timeout):
                raise BrokerError(f"node {self.node} cannot start: processes "
                                  f"{self._node_pids()} still alive or one of the ports "
                                  f"{self.amqp_port}, {self.dist_port}, {self.management_port} "
                                  "is in use")
            if self.standalone:
                self._register()
            self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as logf:
                self._proc = subprocess.Popen(
                    [*self.command_prefix, self.server_script], env=self._env(),
                    cwd=self.base_dir,  # where a failed boot writes erl_crash.dump
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: kill() can reach beam.smp
                )

    def start(self) -> None:
        """Launch the node and block until a pika connection opens."""
        with self._lock:
            if self.running and self._started:
                return
            t0 = time.monotonic()
            self.launch()
            try:
                self.wait_ready(self.settings.start_timeout)
            except BaseException:
                procs.signal_group(self._proc.pid, signal.SIGKILL)
                self._wait_down(10)
                raise
            self._started = True
            if self._epmd_pid is None:
                self._epmd_pid = procs.epmd_for_port(self.epmd_port)  # the first start made it
            log.debug("node %s ready in %.1f s at %s", self.node, time.monotonic() - t0,
                      self._safe_url())

    def _check_alive(self) -> None:
        if self._proc is None:
            raise BrokerError(f"node {self.node} is not started")
        # The wrapper exits (even with code 0) when the node fails to boot.
        if self._proc.poll() is not None:
            raise BrokerError(f"node {self.node} exited with code {self._proc.returncode} "
                              f"while starting{self._diagnostics()}")

    def _diagnostics(self) -> str:
        return f"\n--- tail of {self.log_path} ---\n{_tail(self.log_path, self._log_offset)}"

    def _ports_free(self) -> bool:
        return all(port_free(p) for p in (self.amqp_port, self.dist_port, self.management_port))

    def _wait_down(self, timeout: float) -> bool:
        """Poll until no process of the node is left and its ports are free again."""
        deadline = time.monotonic() + timeout
        while self._node_pids() or not self._ports_free():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def stop(self) -> None:
        """SIGTERM the wrapper (a clean shutdown) and wait; SIGKILL the group on timeout."""
        with self._lock:
            if not self.running:
                return
            t0 = time.monotonic()
            assert self._proc is not None
            self._started = False  # a later start() must wait for readiness again
            if self._proc.poll() is None:  # the wrapper's trap stops beam cleanly
                self._proc.send_signal(signal.SIGTERM)
            else:  # the wrapper is gone (its pid may be reused): beam handles SIGTERM too
                procs.signal_group(self._proc.pid, signal.SIGTERM)
            if not self._wait_down(self.settings.stop_timeout):
                log.warning("node %s did not stop within %.0f s; killing it",
                            self.node, self.settings.stop_timeout)
                self.kill()
                return
            log.debug("node %s stopped in %.1f s", self.node, time.monotonic() - t0)

    def kill(self) -> None:
        """SIGKILL the node's whole process group (the wrapper alone would leave beam running)."""
        with self._lock:
            if not self.running:
                return
            assert self._proc is not None
            self._started = False  # a later start() must wait for readiness again
            procs.signal_group(self._proc.pid, signal.SIGKILL)
            for pid in procs.with_argument(str(self.home)):  # a beam outside the group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not self._wait_down(10):
                raise BrokerError(f"node {self.node} still has processes {self._node_pids()} "
                                  "or busy ports 10 s after SIGKILL")

    def restart(self) -> None:
        """Start again on the same data dir and ports (stopping first if it runs)."""
        with self._lock:
            self.stop()
            self._started = False
            self.start()

    def stop_epmd(self) -> None:
        """Stop the private epmd on this node's epmd port (never the machine's 4369)."""
        procs.stop_epmd(self.epmd_port)
        self._epmd_pid = None

    def rabbitmqctl(self, *args: str, timeout: float = 60,
                    check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run this node's rabbitmqctl with `-n NODE` and the node's HOME (for the cookie)."""
        ctl = Path(self.server_script).with_name("rabbitmqctl")
        result = subprocess.run([*self.command_prefix, str(ctl), "-n", self.node, *args],
                                env=self._env(),
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} exited {result.returncode}: "
                              f"{result.stderr.strip() or result.stdout.strip()}")
        return result

    def _teardown(self) -> None:
        """Stop the node, stop its epmd (if ours), and remove its directory if we created it."""
        try:
            if self._own_dir:
                self.kill()  # the data goes away anyway: no need to wait for a clean stop
            else:
                self.stop()  # keep a user-given workdir consistent
        finally:
            if self.standalone:
                self.stop_epmd()
            if self._own_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)
            release_ports(self._reserved)
