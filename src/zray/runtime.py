"""Starting or joining Ray the same way from every command."""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter in every process Ray starts.
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1"}
# Ray Train settings: plain prints, no per-report log lines, and fewer waits.
# Like WORKER_ENV, set in zray's process (a value already set there wins), which
# a Ray started by zray passes on to its processes, and in the runtime
# environment of a job on a cluster zray joins, so that the trials' processes on
# the cluster's nodes see them too.
TRAIN_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
    "RAY_TRAIN_ENABLE_CONTROLLER_STRUCTURED_LOGGING": "0",
    # One actor process fewer per run (its start-up is paid by every trial); it
    # watches for spot-instance preemption: set it to 1 on clusters of spot nodes.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # How often Ray Train's controller polls its workers (default 2 s). A worker's
    # report waits for the poll before the next epoch may report: with epochs of
    # a second, every epoch waited about a second, and every run's start and end
    # waited for a poll too.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
}


def init_ray(address: str | None = None, *, dashboard_host: str = "127.0.0.1") -> None:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start a local Ray.

    A local Ray keeps its dashboard on (Ray Train's placement-group cleaner
    asks it whether a run's controller is alive), bound to 127.0.0.1 unless
    asked otherwise. A Ray already initialised in this process (a test
    session, a notebook) is used as it is; zray's settings of the process's
    Ray Data (no progress bars, :func:`choose_parquet_reader`) apply in
    every case.

    What Ray's processes print stays in Ray's log files
    (``/tmp/ray/session_latest/logs``) unless verbose (``ZRAY_VERBOSE=1``,
    ``--verbose``): zray's own lines come from the driver, and a run's epoch
    figures reach it as reported metrics.
    """
    import ray

    for key, value in {**WORKER_ENV, **TRAIN_ENV}.items():
        os.environ.setdefault(key, value)
    quiet_logs()
    choose_parquet_reader()
    if ray.is_initialized():  # the caller's Ray (a notebook, a test session): leave its setup alone
        return
    import logging

    from zray.console import is_verbose
    from zray.ray_workarounds import local_ray_options

    level = logging.INFO if is_verbose() else logging.WARNING
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        join_cluster(address, level)
    else:
        # No runtime environment: the processes of a Ray started here inherit this
        # process's variables (set above). One, even of variables only, starts every
        # worker process through Ray's set-up script first (a second Python start
        # importing Ray: 0.4 s a process on 2 cores, several processes per trial).
        ray.init(
            address="local",  # never join some other `ray start` cluster on this machine by accident
            include_dashboard=True,
            dashboard_host=dashboard_host,
            log_to_driver=is_verbose(),
            logging_level=level,
            **local_ray_options(),
        )


# Ray's variable that picks Ray Data's Parquet reader; when a user sets it, their choice stands.
PARQUET_READER_ENV = "RAY_DATA_USE_DATASOURCE_V2"


def choose_parquet_reader() -> None:
    """Read zray's shards with Ray Data's first Parquet reader, unless told otherwise.

    Ray 2.60's default reader (its "DataSource V2", ``DataContext.use_datasource_v2``)
    first reads every file's footer on a pool of up to 32 new actor processes per
    read, spread over the cluster: made for thousands of files in an object store.
    A zray split is a few to a few hundred shards that one process lists in
    milliseconds; on two cores, preparing the quickstart's splits (2,000
    galaxies) took 5.1 s with the pool and 1.1 s with the first reader
    (``scripts/bench_data.py --prepare 2000 --size 32``: 0.21x), once per
    search and per ``zray predict``. Set in the process that calls
    ``ray.data.read_parquet``, where Ray reads the choice.
    """
    if PARQUET_READER_ENV in os.environ:
        return
    from ray.data import DataContext

    DataContext.get_current().use_datasource_v2 = False


# Seconds to wait for a TCP answer from a cluster's head before saying nothing listens.
CONNECT_TIMEOUT_S = 5.0


def _job_env() -> dict[str, str]:
    """WORKER_ENV and TRAIN_ENV as this process has them (the user's own values kept)."""
    return {key: os.environ.get(key, value) for key, value in {**WORKER_ENV, **TRAIN_ENV}.items()}


def join_cluster(address: str, logging_level: int) -> None:
    """``ray.init(address)``, with one sentence naming the address and the likely
    cause when it fails (nothing listening, a missing or wrong token, other versions).

    Ray waits about 13 minutes for a head that is not there, and forever
    where something else listens, so the address is tried first
    (:func:`check_reachable`: a TCP connection, then a gRPC greeting). The
    token this machine holds is offered by :func:`offer_token`, which the CLI
    calls before Ray loads (a program using zray as a library sets
    ``RAY_AUTH_MODE=token`` itself).
    """
    import ray

    from zray.errors import ZrayError

    if address != "auto":
        check_reachable(address)
    try:
        from zray.console import is_verbose

        ray.init(address=address, runtime_env={"env_vars": _job_env()}, log_to_driver=is_verbose(),
                 logging_level=logging_level)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own types
        raise ZrayError(connection_error(address, exc)) from None


# Seconds to wait for a gRPC answer from a head that accepted the TCP connection
# (a Ray GCS answers at once); with CONNECT_TIMEOUT_S, under 10 s in all.
GRPC_PROBE_TIMEOUT_S = 4.0
# The HTTP/2 client connection preface, then an empty SETTINGS frame (length 0, type 0x4,
# no flags, stream 0): what a gRPC client sends first on a new connection.
_HTTP2_GREETING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 0x4, 0, 0, 0, 0, 0])


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S,
                    probe_timeout: float = GRPC_PROBE_TIMEOUT_S) -> None:
    """Raise one sentence unless a gRPC server (a Ray head's GCS, or a Ray Client
    server for ``ray://``) answers at ``HOST:PORT``.

    A TCP connection alone is not enough: with something else listening there
    (another service, a wrong port), ``ray.init`` waits forever and says nothing.
    With ``RAY_USE_TLS`` set the head speaks TLS, which this plain-text greeting
    cannot tell from something else, so only the TCP connection is checked.
    """
    import socket

    from zray.errors import ZrayError

    client = address.startswith("ray://")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ZrayError(f"--address {address}: expected HOST:PORT of the cluster's head, e.g. 10.0.0.5:6379")
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError as exc:
        why = "connection refused" if isinstance(exc, ConnectionRefusedError) else (exc.strerror or str(exc))
        raise ZrayError(
            f"cannot connect to the Ray cluster at {address}: nothing is listening there ({why}); "
            f"expected a running head (`ray up CLUSTER.yaml`, then check with `ray status --address {address}`)"
        ) from None
    with sock:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true") or _answers_grpc(sock, probe_timeout):
            return
    example = f"ray://{host}:10001" if client else f"{host}:6379"
    raise ZrayError(
        f"cannot connect to the Ray cluster at {address}: something listens there but it is not a Ray head "
        f"(no gRPC answer within {probe_timeout:g} s); expected the address of a Ray head, e.g. {example} "
        f"(check with `ray status --address {host}:6379`)"
    )


def _answers_grpc(sock, timeout: float) -> bool:
    """Whether the server on ``sock`` answers an HTTP/2 greeting with a SETTINGS frame, as every
    gRPC server does (its own connection preface); silence, an HTTP/1 reply or a closed
    connection mean it is something else."""
    import time

    deadline = time.monotonic() + timeout
    header = b""
    try:
        sock.sendall(_HTTP2_GREETING)
        while len(header) < 9:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sock.settimeout(left)
            chunk = sock.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
    except OSError:  # socket.timeout is an OSError too
        return False
    return header[3] == 0x4


def connection_error(address: str, exc: BaseException) -> str:
    """The sentence for a failed ``ray.init(address)``, from the whole exception chain."""
    texts, seen = [], exc
    while seen is not None:
        texts.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    text = "\n".join(texts)
    if "InvalidAuthToken" in text or "AuthenticationError" in text or "authentication token" in text.lower():
        return (f"the Ray cluster at {address} refused the connection: authentication token missing or "
                "wrong; expected this machine to hold the cluster's token (copy the head's ~/.ray/auth_token "
                "here, or set RAY_AUTH_TOKEN_PATH to a copy, with RAY_AUTH_MODE=token)")
    if "Version mismatch" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip().startswith(("Ray:", "Python:"))]
        versions = ", ".join(lines[:2]) + " there; " + ", ".join(lines[2:4]) + " here" if len(lines) >= 4 else ""
        return (f"the Ray cluster at {address} runs other versions of Ray or Python ({versions}); expected the "
                "same Ray and Python versions on every node and on this machine")
    from zray.errors import first_line

    return (f"cannot connect to the Ray cluster at {address} ({first_line(exc)}); expected a running head "
            f"that this machine can reach (check with `ray status --address {address}`)")


def offer_token() -> None:
    """Use this machine's Ray token when it has one and ``RAY_AUTH_MODE`` is unset.

    Clusters started by ``ray up`` or ``ray start`` on Ray 2.60 require a
    token; a driver joining one must have ``RAY_AUTH_MODE=token`` set before
    Ray's core library loads (setting it later is not seen), so the CLI calls
    this before anything imports Ray. A local Ray started by zray uses token
    authentication anyway, and a cluster without it accepts a token too.
    """
    import sys

    if "ray" in sys.modules:
        # Too late to be seen, and Ray processes started from here would then
        # require a token that this process does not send: leave it alone.
        return
    if "RAY_AUTH_MODE" not in os.environ and _token_available():
        os.environ["RAY_AUTH_MODE"] = "token"


def _token_available() -> bool:
    from pathlib import Path

    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).is_file()


# Ray loggers (by the end of their names) whose warnings zray hides unless verbose.
QUIET_LOGGER_SUFFIXES = (".authentication_token_setup",)


def quiet_logs(load: bool = True) -> None:
    """Keep the terminal to zray's own progress lines.

    Ray Data's progress bars and Ray Train's per-report INFO lines repeat for
    every epoch and worker; TensorFlow logs every collective it sets up.
    Called in the driver and in every training worker. ``load=False``
    configures Ray Data and Optuna only if already imported: for a process
    that needs neither (``zray predict`` on a few thousand galaxies: importing
    them cost that command 0.7 s), or only Ray Data, which Ray Train has
    loaded already (a Tune trial, a training worker).
    """
    import logging
    import sys

    from zray.console import is_verbose

    if not is_verbose():
        # Ray Data configures its loggers when first used (INFO, own handler): "Dataset
        # ... execution finished" per split, and the warning that progress bars are
        # disabled (zray disabled them, on purpose). Its documented level variable wins.
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    names = ["ray.data", "ray.train", "ray.tune", "tensorflow", "absl"]
    # Some of Ray Train's loggers are named by file path, not module.
    names += [n for n in logging.root.manager.loggerDict if "ray/train" in n or n.startswith("ray.data")]
    for name in names:  # at least WARNING (a quieter level set already, as Ray Data's, stays)
        if logging.getLogger(name).getEffectiveLevel() < logging.WARNING:
            logging.getLogger(name).setLevel(logging.WARNING)
    if not is_verbose():
        # The token set-up's note on every start: not actionable on a laptop (README
        # explains tokens for clusters).
        for name in list(logging.root.manager.loggerDict):
            if name.endswith(QUIET_LOGGER_SUFFIXES) and name.startswith("ray."):
                logging.getLogger(name).setLevel(logging.ERROR)
        # Tune's new output engine prints its start block and a TensorBoard hint into
        # Ray's temporary folder even when silent; the legacy one at verbosity 0 does not.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        try:
            if not load and "optuna" not in sys.modules:
                raise ImportError
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created ..."
        except ImportError:
            pass
    try:
        if not load and "ray.data" not in sys.modules:
            raise ImportError
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except (ImportError, AttributeError):
        pass
