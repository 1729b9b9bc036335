"""Broker providers: a RabbitMQ node of our own, a Docker container, or a broker given by URL.

All three share one small interface (`Broker`) so the harness can start a broker, inject
faults (stop, kill, restart) and tear everything down the same way everywhere::

    from harness.broker import open_broker

    with open_broker() as broker:  # auto: AMQP_URL, else Docker, else a local node
        print(broker.provider, broker.amqp_url, broker.version())
        broker.kill()      # hard crash
        broker.restart()   # same data, same ports: clients reconnect to the same URL

The local provider runs the rabbitmq-server release script with its own node name, ports,
epmd, cookie and data dir, so it never touches a RabbitMQ node someone else runs.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

import pika
import pika.exceptions

from harness.ports import free_ports, port_free

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "rabbitmq:4.1.4-management"
DEBIAN_RELEASE_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"

HOWTO = """\
Get a RabbitMQ broker in any one of these ways:
  1. a local node (what CI uses): `sudo apt-get install rabbitmq-server` (Debian/Ubuntu),
     or `conda install -c conda-forge rabbitmq-server` into the active conda environment,
     or point RABBITMQ_SERVER at a rabbitmq-server release script;
  2. Docker: start a Docker daemon (or any engine with a Docker API, via DOCKER_HOST);
     the image is RABBITMQ_IMAGE (default {image});
  3. an existing broker: pass --broker amqp://USER:PASS@HOST:5672/%2F or set AMQP_URL."""


class BrokerUnavailable(RuntimeError):
    """No provider can give us a broker; the message says how to get one."""

    def __init__(self, reason: str) -> None:
        howto = HOWTO.format(image=DEFAULT_IMAGE)
        super().__init__(f"No RabbitMQ broker available: {reason}.\n{howto}")


class BrokerError(RuntimeError):
    """A broker failed to start, stop or answer in time (the message carries its log tail)."""


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


@dataclass
class BrokerSettings:
    """Typed broker options; those left unset fall back to environment variables.

    Args:
        url: broker URL for the "url" provider (env AMQP_URL).
        management_url: management API base URL for the "url" provider
            (env RABBITMQ_MANAGEMENT_URL; default http://HOST:15672).
        server_script: rabbitmq-server release script (env RABBITMQ_SERVER; default: searched).
        image: Docker image (env RABBITMQ_IMAGE).
        username: user created on a fresh local node or container.
        password: that user's password.
        node_name: local node name (default lab-<random>@localhost).
        stats_interval_ms: management statistics interval (RabbitMQ's default is 5000).
        start_timeout: seconds to wait for a broker to accept connections.
        stop_timeout: seconds to wait for a graceful stop before killing.
        docker_ping_timeout: seconds to wait for a Docker daemon to answer.
    """

    url: str | None = field(default_factory=lambda: _env("AMQP_URL"))
    management_url: str | None = field(default_factory=lambda: _env("RABBITMQ_MANAGEMENT_URL"))
    server_script: str | None = field(default_factory=lambda: _env("RABBITMQ_SERVER"))
    image: str = field(default_factory=lambda: _env("RABBITMQ_IMAGE", DEFAULT_IMAGE) or "")
    username: str = "guest"
    password: str = "guest"
    node_name: str | None = None
    stats_interval_ms: int = 500
    start_timeout: float = 90.0
    stop_timeout: float = 30.0
    docker_ping_timeout: float = 2.0


# Brokers still to tear down when Python exits (normally, on Ctrl-C, or on SIGTERM).
_live: set[Broker] = set()


@atexit.register
def _close_all() -> None:
    for broker in list(_live):
        if broker._owner_pid == os.getpid():  # a forked child must not close its parent's broker
            with contextlib.suppress(Exception):
                broker.close()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _install_sigterm_exit() -> None:
    """Make SIGTERM raise SystemExit so atexit cleanup runs, unless someone handles it already."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


class Broker:
    """A RabbitMQ broker the harness can start, stop, kill, restart and close."""

    provider: str = "?"
    can_stop: bool = True

    def __init__(self, settings: BrokerSettings | None = None) -> None:
        self.settings = settings or BrokerSettings()
        self.amqp_url: str = ""
        self.management_url: str | None = None
        self.management_auth: tuple[str, str] = (self.settings.username, self.settings.password)
        self._lock = threading.RLock()  # fault injection may come from another thread
        self._owner_pid = os.getpid()
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.provider} {self.amqp_url or '(not started)'}>"

    def start(self) -> None:
        """Start the broker and block until a pika connection opens."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the broker gracefully and block until it is down."""
        raise NotImplementedError

    def kill(self) -> None:
        """Kill the broker hard (no clean shutdown) and block until it is down."""
        raise NotImplementedError

    def restart(self) -> None:
        """Start the broker again on the same data and ports; block until ready."""
        raise NotImplementedError

    def close(self) -> None:
        """Tear everything down; idempotent and safe to call from atexit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._teardown()
            finally:
                _live.discard(self)

    def _teardown(self) -> None:
        """Release what the provider holds (hook for providers; runs once, under the lock)."""

    def __enter__(self) -> Broker:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_alive(self) -> None:
        """Raise BrokerError if the broker can no longer become ready (hook for providers)."""

    def _diagnostics(self) -> str:
        """Text to append to errors, such as a log tail (hook for providers)."""
        return ""

    def _probe(self) -> None:
        """Open and close one connection; raise if the broker does not accept it."""
        p = urlparse(self.amqp_url)
        port = p.port or (5671 if p.scheme == "amqps" else 5672)
        # A plain TCP connect first: it is quiet, whereas pika logs every refused attempt.
        with socket.create_connection((p.hostname or "localhost", port), timeout=2):
            pass
        params = pika.URLParameters(self.amqp_url)
        params.socket_timeout = 5
        params.connection_attempts = 1
        pika.BlockingConnection(params).close()

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until a pika connection to amqp_url opens (polling); raise BrokerError if not."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                self._probe()
                return
            except (pika.exceptions.ProbableAuthenticationError,
                    pika.exceptions.ProbableAccessDeniedError) as exc:
                raise BrokerError(f"{self._safe_url()} refused the login: {exc!r}") from exc
            except (OSError, pika.exceptions.AMQPError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise BrokerError(f"broker at {self._safe_url()} not ready after {timeout:.0f} s "
                                  f"(last error: {last!r}){self._diagnostics()}")
            time.sleep(0.2)

    def version(self) -> str:
        """The broker's version string as it announces it on connect, e.g. "3.10.8"."""
        conn = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            value = conn._impl.server_properties["version"]
        finally:
            conn.close()
        return value.decode() if isinstance(value, bytes) else str(value)

    def _safe_url(self) -> str:
        """amqp_url without the password, for messages."""
        p = urlparse(self.amqp_url)
        return self.amqp_url.replace(f":{p.password}@", ":***@") if p.password else self.amqp_url

    def _register(self) -> None:
        _install_sigterm_exit()
        _live.add(self)


def _amqp_url(user: str, password: str, host: str, port: int) -> str:
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/%2F"


def _is_debian_wrapper(path: Path) -> bool:
    # /usr/sbin/rabbitmq-server links to a wrapper that switches to the rabbitmq user.
    real = path.resolve()
    return real.name == "rabbitmq-script-wrapper" or real.parent == Path("/usr/sbin")


def _no_script(settings: BrokerSettings) -> str:
    where = settings.server_script or _env("RABBITMQ_SERVER")
    return "no rabbitmq-server release script " + (f"at {where}" if where else "found")


def find_server_script(server_script: str | None = None) -> str | None:
    """Path of a rabbitmq-server release script, or None; never the Debian wrapper.

    An explicit `server_script` (or env RABBITMQ_SERVER) is used as given, without searching.
    """
    explicit = server_script or _env("RABBITMQ_SERVER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    candidates = []
    if conda := _env("CONDA_PREFIX"):
        candidates.append(Path(conda) / "bin" / "rabbitmq-server")
    candidates.append(Path(DEBIAN_RELEASE_SCRIPT))
    if on_path := shutil.which("rabbitmq-server"):
        candidates.append(Path(on_path))
    for path in candidates:
        if os.access(path, os.X_OK) and not _is_debian_wrapper(path):
            return str(path)
    return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of a process from /proc, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return fields[0], int(fields[3])


def _session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of a session; on systems without /proc, [sid] or []."""
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(sid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [sid]
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st and st[1] == sid and st[0] != "Z":
                members.append(int(entry.name))
    return members


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


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
    """A RabbitMQ node of our own, run from the rabbitmq-server release script.

    Own node name, ports, epmd (ERL_EPMD_PORT), cookie (HOME) and data dir, so it runs beside
    any other node on the machine. Ports stay the same across restarts.
    """

    provider = "local"

    def __init__(self, settings: BrokerSettings | None = None,
                 workdir: str | Path | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        script = find_server_script(s.server_script)
        if script is None:
            raise BrokerUnavailable(_no_script(s))
        self.server_script = script
        self.node = s.node_name or f"lab-{secrets.token_hex(3)}@localhost"
        self._own_dir = workdir is None
        if workdir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="rabbit-lab-"))
        else:
            self.base_dir = Path(workdir).resolve()
            self.base_dir.mkdir(parents=True, exist_ok=True)
        self.amqp_port, self.management_port, self.dist_port, self.epmd_port = free_ports(4)
        self.amqp_url = _amqp_url(s.username, s.password, "127.0.0.1", self.amqp_port)
        self.management_url = f"http://127.0.0.1:{self.management_port}"
        self.log_path = self.base_dir / "node.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._epmd_pid: int | None = None
        self._write_files()

    def __repr__(self) -> str:
        return f"<LocalBroker {self.node} {self.amqp_url} dir={self.base_dir}>"

    def _write_files(self) -> None:
        s, b = self.settings, self.base_dir
        for sub in ("home", "mnesia", "log", "conf.d"):
            (b / sub).mkdir(exist_ok=True)
        cookie = b / "home" / ".erlang.cookie"
        if not cookie.exists():  # kept across restarts: rabbitmqctl needs the same one
            cookie.write_text(secrets.token_hex(16))
            cookie.chmod(0o400)
        (b / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (b / "rabbitmq-env.conf").write_text("")
        (b / "advanced.config").write_text("[].\n")
        (b / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.ip = 127.0.0.1\n"
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
        )

    def _env(self) -> dict[str, str]:
        """Environment that isolates this node; also what rabbitmqctl needs (HOME: cookie)."""
        b = self.base_dir
        # Inherited RABBITMQ_*/ERL_* settings would point the node at someone else's setup.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        script_dir = str(Path(self.server_script).parent)
        env.update(
            PATH=os.pathsep.join([script_dir, env.get("PATH", "")]),  # conda: erl sits beside it
            HOME=str(b / "home"),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
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
            # Distribution and epmd on loopback only; both listen on 0.0.0.0 otherwise.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    @property
    def running(self) -> bool:
        """True while a process of this node is alive."""
        return self._proc is not None and bool(self._node_pids())

    def _node_pids(self) -> list[int]:
        if self._proc is None:
            return []
        self._proc.poll()  # reap the wrapper so it does not linger as a zombie
        return _session_members(self._proc.pid)

    def pids(self) -> list[int]:
        """Process ids of this node: wrapper, beam.smp and helpers, plus its own epmd."""
        pids = self._node_pids()
        if self._epmd_pid and self._epmd_is_ours(self._epmd_pid):
            pids.append(self._epmd_pid)
        return pids

    def start(self) -> None:
        """Launch the node and block until a pika connection opens."""
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
            self._register()
            self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            t0 = time.monotonic()
            with self.log_path.open("ab") as logf:
                self._proc = subprocess.Popen(
                    [self.server_script], env=self._env(), cwd=self.base_dir,  # erl_crash.dump
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: kill() can reach beam.smp
                )
            try:
                self.wait_ready(self.settings.start_timeout)
            except BaseException:
                self._signal_group(signal.SIGKILL)
                self._wait_down(10)
                raise
            self._started = True
            if not (self._epmd_pid and self._epmd_is_ours(self._epmd_pid)):
                self._epmd_pid = self._find_epmd()  # the first start launched it
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

    def _signal_group(self, sig: int) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)

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
            if self._proc.poll() is None:  # the wrapper's trap stops beam cleanly
                self._proc.send_signal(signal.SIGTERM)
            else:  # the wrapper is gone (its pid may be reused): beam handles SIGTERM too
                self._signal_group(signal.SIGTERM)
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
            self._signal_group(signal.SIGKILL)
            if not self._wait_down(10):
                raise BrokerError(f"node {self.node} still has processes {self._node_pids()} "
                                  "or busy ports 10 s after SIGKILL")

    def restart(self) -> None:
        """Start again on the same data dir and ports (stopping first if it runs)."""
        with self._lock:
            self.stop()
            self.start()

    def _epmd_is_ours(self, pid: int) -> bool:
        # Ours: an epmd started by this node, for this node's port (it inherited its env).
        env = _environ(pid)
        st = _proc_stat(pid)
        return (st is not None and st[0] != "Z"
                and f"ERL_EPMD_PORT={self.epmd_port}".encode() in env
                and f"RABBITMQ_NODENAME={self.node}".encode() in env)

    def _find_epmd(self) -> int | None:
        """The pid of the epmd this node started (it daemonizes and outlives the node)."""
        for entry in Path("/proc").glob("[0-9]*"):  # no /proc (macOS): nothing found
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if Path(argv0.decode(errors="replace")).name == "epmd" and self._epmd_is_ours(
                    int(entry.name)):
                return int(entry.name)
        return None

    def _stop_epmd(self) -> None:
        pid = self._epmd_pid or self._find_epmd()  # found late if the node never got ready
        if pid is None:
            if not Path("/proc/self").exists():  # no /proc to find it: ask our epmd to quit
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run(["epmd", "-kill"], env=self._env(), capture_output=True,
                                   timeout=10)
            return
        deadline = time.monotonic() + 5
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self._epmd_is_ours(pid):  # checked each time: never signal a reused pid
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            while self._epmd_is_ours(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            deadline = time.monotonic() + 5
        self._epmd_pid = None

    def rabbitmqctl(self, *args: str, timeout: float = 60,
                    check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run this node's rabbitmqctl with `-n NODE` and the node's HOME (for the cookie)."""
        ctl = Path(self.server_script).with_name("rabbitmqctl")
        result = subprocess.run([str(ctl), "-n", self.node, *args], env=self._env(),
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise BrokerError(f"rabbitmqctl {' '.join(args)} exited {result.returncode}: "
                              f"{result.stderr.strip() or result.stdout.strip()}")
        return result

    def _teardown(self) -> None:
        """Stop the node, stop its epmd, and remove its directory if we created it."""
        try:
            if self._own_dir:
                self.kill()  # the data goes away anyway: no need to wait for a clean stop
            else:
                self.stop()  # keep a user-given workdir consistent
        finally:
            self._stop_epmd()
            if self._own_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)


class DockerBroker(Broker):
    """RabbitMQ in a container via testcontainers, with fixed host ports.

    The host ports are chosen here and bound explicitly, so a container stop/start keeps
    them and clients reconnect to the same URL. Fresh management stats come from a conf.d
    file copied into the container before it starts (/etc/rabbitmq/conf.d/90-rabbit-lab.conf).
    Ryuk and connection-mode options come from the TESTCONTAINERS_* environment as usual.
    """

    provider = "docker"

    def __init__(self, settings: BrokerSettings | None = None) -> None:
        super().__init__(settings)
        s = self.settings
        try:
            from docker.errors import DockerException

            with warnings.catch_warnings():  # its module uses a decorator it deprecates itself
                warnings.simplefilter("ignore", DeprecationWarning)
                from testcontainers.community.rabbitmq import RabbitMqContainer
        except ImportError as exc:
            raise BrokerUnavailable(f"testcontainers is not installed ({exc})") from exc
        self.amqp_port, self.management_port = free_ports(2)
        conf = (f"collect_statistics_interval = {s.stats_interval_ms}\n"
                "management.sample_retention_policies.global.minute = 1\n"
                "management.sample_retention_policies.basic.minute = 1\n"
                "management.sample_retention_policies.detailed.10 = 1\n")
        try:
            # port=5672 explicitly: the class would otherwise read RABBITMQ_NODE_PORT from env.
            self._container = (
                RabbitMqContainer(s.image, port=5672, username=s.username, password=s.password)
                .with_bind_ports(5672, self.amqp_port)
                .with_bind_ports(15672, self.management_port)
                .with_copy_into_container(conf.encode(), "/etc/rabbitmq/conf.d/90-rabbit-lab.conf")
            )
        except DockerException as exc:  # raised by the constructor when no daemon answers
            raise BrokerUnavailable(f"no Docker daemon ({_short(exc)})") from exc

    def _wrapped(self) -> Any:
        return self._container.get_wrapped_container()

    def _has_container(self) -> bool:
        try:
            self._wrapped()
        except Exception:  # testcontainers: ContainerStartException until it is created
            return False
        return True

    def _refresh_urls(self) -> None:
        # The container host and mapped port depend on testcontainers' connection mode.
        host = self._container.get_container_host_ip()
        s = self.settings
        self.amqp_url = _amqp_url(s.username, s.password, host,
                                  self._container.get_exposed_port(5672))
        self.management_url = f"http://{host}:{self._container.get_exposed_port(15672)}"

    def start(self) -> None:
        """Create and start the container (or start the stopped one); block until ready."""
        with self._lock:
            if self._closed:
                raise BrokerError("this broker is closed; open a new one")
            self._register()
            try:
                if not self._has_container():
                    self._container.start()  # pulls if needed, copies the conf, waits for pika
                else:
                    self._wrapped().start()
            except Exception as exc:
                raise BrokerError(f"container {self.settings.image} failed to start: "
                                  f"{_short(exc, 500)}{self._diagnostics()}") from exc
            self._refresh_urls()
            self.wait_ready(self.settings.start_timeout)
            self._started = True

    def _check_alive(self) -> None:
        c = self._wrapped()
        c.reload()
        if c.status in ("exited", "dead"):
            raise BrokerError(f"container {c.short_id} is {c.status}{self._diagnostics()}")

    def _diagnostics(self) -> str:
        try:
            logs = self._wrapped().logs(tail=40).decode(errors="replace")
        except Exception:  # no container yet, or the engine is gone
            return ""
        return f"\n--- tail of the container log ---\n{logs}"

    def stop(self) -> None:
        """docker stop: SIGTERM, then SIGKILL after stop_timeout; blocks until stopped."""
        with self._lock:
            self._wrapped().stop(timeout=int(self.settings.stop_timeout))

    def kill(self) -> None:
        """docker kill (SIGKILL); blocks until the container has exited."""
        with self._lock:
            c = self._wrapped()
            c.reload()
            if c.status == "running":
                c.kill()
                c.wait(timeout=30)

    def restart(self) -> None:
        """Start the same container again (same data volume, same host ports)."""
        with self._lock:
            self._wrapped().reload()
            if self._wrapped().status == "running":
                self.stop()
            self.start()

    def _teardown(self) -> None:
        """Remove the container with its anonymous volumes."""
        with contextlib.suppress(Exception):
            self._container.stop()  # testcontainers: remove(force=True, v=True)


class UrlBroker(Broker):
    """A broker someone else runs, given by URL: it can be waited for, not stopped."""

    provider = "url"
    can_stop = False

    def __init__(self, url: str, settings: BrokerSettings | None = None) -> None:
        super().__init__(settings)
        p = urlparse(url)
        if p.scheme not in ("amqp", "amqps") or not p.hostname:
            raise ValueError(f"not an amqp:// or amqps:// URL with a host: {url!r}")
        self.amqp_url = url
        self.management_auth = (unquote(p.username or "guest"), unquote(p.password or "guest"))
        host = f"[{p.hostname}]" if ":" in p.hostname else p.hostname
        self.management_url = self.settings.management_url or f"http://{host}:15672"

    def start(self) -> None:
        """Wait until the broker accepts a connection."""
        self.wait_ready(self.settings.start_timeout)
        self._started = True

    def _refuse(self, what: str) -> None:
        raise NotImplementedError(
            f"cannot {what} a broker given by URL ({self._safe_url()}): it is not ours. "
            "Use the local or docker provider for fault injection.")

    def stop(self) -> None:
        """Not possible for a broker given by URL."""
        self._refuse("stop")

    def kill(self) -> None:
        """Not possible for a broker given by URL."""
        self._refuse("kill")

    def restart(self) -> None:
        """Not possible for a broker given by URL."""
        self._refuse("restart")

    def _teardown(self) -> None:
        """Nothing to tear down: the broker is not ours."""


def _short(exc: BaseException, limit: int = 160) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def docker_available(timeout: float = 2.0) -> tuple[bool, str]:
    """Whether a Docker daemon answers a ping (as testcontainers would reach it), and why."""
    try:
        from testcontainers.core.docker_client import DockerClient

        client = DockerClient(timeout=timeout).client
        try:
            client.ping()
        finally:
            client.close()
    except ImportError as exc:
        return False, f"testcontainers is not installed ({exc})"
    except Exception as exc:  # DockerException, requests errors, timeouts: all mean "no"
        return False, f"no Docker daemon ({_short(exc)})"
    return True, "a Docker daemon answers"


def _choose(kind: str, url: str | None, settings: BrokerSettings,
            workdir: str | Path | None) -> tuple[Broker, str]:
    """The (not yet started) broker for `kind`, and why it was chosen."""
    if kind == "url":
        if not url:
            raise ValueError("kind='url' needs url=... or the AMQP_URL environment variable")
        return UrlBroker(url, settings), "a URL was given"
    if kind == "local":
        return LocalBroker(settings, workdir), "asked for local"
    if kind == "docker":
        ok, why = docker_available(settings.docker_ping_timeout)
        if not ok:
            raise BrokerUnavailable(why)
        return DockerBroker(settings), "asked for docker"
    if kind != "auto":
        raise ValueError(f"kind must be auto, local, docker, url or an amqp:// URL, not {kind!r}")
    if url:
        return UrlBroker(url, settings), "a URL was given (url= or AMQP_URL)"
    ok, docker_why = docker_available(settings.docker_ping_timeout)
    if ok:
        return DockerBroker(settings), docker_why
    script = find_server_script(settings.server_script)
    if script is None:
        raise BrokerUnavailable(f"AMQP_URL is not set; {docker_why}; {_no_script(settings)}")
    return LocalBroker(settings, workdir), f"{docker_why}; found {script}"


def open_broker(kind: str = "auto", *, url: str | None = None,
                workdir: str | Path | None = None, **settings: Any) -> Broker:
    """Choose a provider, start its broker and return it, ready for connections.

    Args:
        kind: "auto" (AMQP URL, else Docker, else a local node), "local", "docker", "url",
            or an amqp:// URL.
        url: broker URL for "url"/"auto" (default: env AMQP_URL).
        workdir: folder for a local node's data and log, kept at close
            (default: a temporary folder, removed at close).
        **settings: fields of BrokerSettings, e.g. image=..., start_timeout=...
    """
    s = BrokerSettings(**settings)
    if kind.startswith(("amqp://", "amqps://")):
        kind, url = "url", kind
    url = url or s.url
    broker, why = _choose(kind, url, s, workdir)
    log.info("broker: using the %s provider (%s)", broker.provider, why)
    try:
        broker.start()
    except BaseException:
        broker.close()
        raise
    return broker

