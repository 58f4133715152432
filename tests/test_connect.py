"""Joining a cluster: one sentence naming the address and the likely cause when it fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from test_cluster import _free_ports, _node_env, _processes_naming, _ray_start, _stop
from zray.cli import main
from zray.errors import ZrayError
from zray.runtime import GRPC_PROBE_TIMEOUT_S, check_reachable, connection_error

ROOT = Path(__file__).resolve().parents[1]


def test_nothing_listening_is_one_sentence_at_once(tmp_path):
    port = _free_ports(1)[0]
    t0 = time.perf_counter()
    result = CliRunner().invoke(main, ["tune", str(ROOT / "search_spaces" / "quickstart.yaml"),
                                       "--address", f"127.0.0.1:{port}", "--set", f"data.path={tmp_path / 'd'}"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"zray: error: cannot connect to the Ray cluster at 127.0.0.1:{port}: nothing is listening there "
        f"(connection refused); expected a running head (`ray up CLUSTER.yaml`, then check with "
        f"`ray status --address 127.0.0.1:{port}`)"
    )
    assert time.perf_counter() - t0 < 10  # Ray alone would wait about 13 minutes
    assert not (tmp_path / "d").exists()  # checked before simulating anything


@contextmanager
def _listening(reply: bytes | None = None):
    """A TCP server on a free local port that is not Ray: it keeps every connection open
    and says nothing, or, given ``reply``, reads the greeting, answers ``reply`` and hangs up."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop, conns = threading.Event(), []

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:  # the accept timeout: look at `stop` again
                continue
            conns.append(conn)
            if reply is not None:
                conn.settimeout(5)
                conn.recv(1024)
                conn.sendall(reply)
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in conns:
            conn.close()
        server.close()


def _not_ray_sentence(address: str, host: str = "127.0.0.1", example: str | None = None,
                      seconds: float = GRPC_PROBE_TIMEOUT_S) -> str:
    return (f"zray: error: cannot connect to the Ray cluster at {address}: something listens there but it is "
            f"not a Ray head (no gRPC answer within {seconds:g} s); expected the address of a Ray "
            f"head, e.g. {example or f'{host}:6379'} (check with `ray status --address {host}:6379`)")


@pytest.mark.parametrize("reply", [None, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"],
                         ids=["silent", "http1"])
def test_something_else_listening_is_one_sentence_within_seconds(tmp_path, reply):
    """Ray alone would wait forever there, printing nothing."""
    with _listening(reply) as port:
        t0 = time.perf_counter()
        result = CliRunner().invoke(main, ["tune", str(ROOT / "search_spaces" / "quickstart.yaml"),
                                           "--address", f"127.0.0.1:{port}", "--set", f"data.path={tmp_path / 'd'}"])
        elapsed = time.perf_counter() - t0
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == _not_ray_sentence(f"127.0.0.1:{port}")
    assert elapsed < 15  # a behaviour bound: the probe gives up after a few seconds
    assert not (tmp_path / "d").exists()  # checked before simulating anything


def test_a_ray_client_address_is_probed_too():
    with _listening() as port, pytest.raises(ZrayError) as caught:
        check_reachable(f"ray://127.0.0.1:{port}", probe_timeout=0.5)
    assert f"zray: error: {caught.value}" == _not_ray_sentence(f"ray://127.0.0.1:{port}",
                                                               example="ray://127.0.0.1:10001", seconds=0.5)


def test_the_probe_accepts_a_real_ray_head(ray_session):
    """Ray's GCS (here the test session's, started by ray.init) is a gRPC server."""
    gcs = ray_session.get_runtime_context().gcs_address
    t0 = time.perf_counter()
    check_reachable(gcs)
    assert time.perf_counter() - t0 < 2  # it answered, rather than the probe timing out


def test_a_malformed_address_is_named(tmp_path):
    result = CliRunner().invoke(main, ["tune", str(ROOT / "search_spaces" / "quickstart.yaml"),
                                       "--address", "headnode"])
    assert result.exit_code == 1
    assert "zray: error: --address headnode: expected HOST:PORT of the cluster's head, e.g. 10.0.0.5:6379" \
        in result.output


def test_other_versions_are_named_from_rays_message():
    # The exception text Ray 2.60 raises when a driver's versions differ from the cluster's.
    exc = RuntimeError("Version mismatch: The cluster was started with:\n    Ray: 2.59.0\n    Python: 3.11.7\n"
                       "This process on node 10.0.0.5 was started with:\n    Ray: 2.60.0\n    Python: 3.11.7\n")
    assert connection_error("10.0.0.5:6379", exc) == (
        "the Ray cluster at 10.0.0.5:6379 runs other versions of Ray or Python (Ray: 2.59.0, Python: 3.11.7 "
        "there; Ray: 2.60.0, Python: 3.11.7 here); expected the same Ray and Python versions on every node "
        "and on this machine")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_wrong_token_is_one_sentence(tmp_path, sim_data):
    """A real head with token authentication; the driver holds another token."""
    right, wrong = tmp_path / "right-token", tmp_path / "wrong-token"
    right.write_text("a" * 64)
    wrong.write_text("b" * 64)
    temp_dir = f"/tmp/zt{os.getpid()}"
    port = _free_ports(1)[0]
    env = {**_node_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(right)}
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(_ray_start(temp_dir, {"zray_head": 1}, head_port=port), stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        for _ in range(60):
            if subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        space = tmp_path / "s.yaml"
        space.write_text(yaml.safe_dump({"name": "t", "model": "cnn", "data": {"path": str(sim_data), "image_size": 32},
                                         "fixed": {"epochs": 1}, "tune": {"num_samples": 1}}))
        result = subprocess.run(
            [sys.executable, "-m", "zray", "tune", str(space), "--address", f"127.0.0.1:{port}",
             "--storage", str(tmp_path / "runs")],
            capture_output=True, text=True, timeout=150, env={**env, "RAY_AUTH_TOKEN_PATH": str(wrong)})
        assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
        assert result.stderr.strip().splitlines()[-1] == (
            f"zray: error: the Ray cluster at 127.0.0.1:{port} refused the connection: authentication token "
            "missing or wrong; expected this machine to hold the cluster's token (copy the head's "
            "~/.ray/auth_token here, or set RAY_AUTH_TOKEN_PATH to a copy, with RAY_AUTH_MODE=token)"
        ), result.stderr[-2000:]
        assert "Traceback" not in result.stderr
    finally:
        _stop([head], [temp_dir])
        log.close()
        assert _processes_naming([temp_dir]) == []
