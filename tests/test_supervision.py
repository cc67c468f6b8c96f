"""Faults injected into a served stack under concurrent load: each model process and tritonserver killed
(SIGKILL, SIGSEGV), stopped (hung), the front door killed. Each time: readiness goes not ready, the part comes
back within the limit on the same ports, and SDK calls (default retries) sent after recovery all succeed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import mmserve
from mmserve.client import Transport
from mmserve.client.core import classify
from mmserve.serving.supervisor import model_processes

RECOVERY_LIMIT_S = 15.0


@pytest.fixture(scope="module")
def stack(triton_repository, bundled_settings, tmp_path_factory, stack_factory):
    with stack_factory(triton_repository, bundled_settings.cache_dir, tmp_path_factory.mktemp("faults"),
                       hang_timeout_s=3, probe_interval_s=0.5, backoff_s=0.2, max_restarts=20) as served:
        yield served


class Load:
    """Threads embedding images and texts through the SDK (default retries) until stopped; every call logged."""

    def __init__(self, url: str, images: list[bytes], threads: int = 4) -> None:
        self.calls: list[tuple[str, float, float, Exception | None]] = []  # kind, start, end, error
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(url, images, "image" if i % 2 else "text"),
                                          daemon=True) for i in range(threads)]

    def _work(self, url: str, images: list[bytes], kind: str) -> None:
        with mmserve.Client(url) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    if kind == "image":
                        client.embed_images(images[:2])
                    else:
                        client.embed_texts(["a red circle", "a blue square"])
                    error = None
                except Exception as failure:  # noqa: BLE001 - the test inspects every outcome
                    error = failure
                self.calls.append((kind, started, time.monotonic(), error))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def successes_started_after(self, moment: float, kind: str) -> int:
        return sum(1 for k, started, _, error in self.calls if k == kind and started > moment and error is None)

    def failures_started_after(self, moment: float) -> list:
        return [(kind, repr(error)) for kind, started, _, error in self.calls if started > moment and error]


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class ReadinessWatch:
    """Polls readiness endpoints every 10 ms in a thread, remembering each one's not-ready moments."""

    def __init__(self, urls: list[str]) -> None:
        self.not_ready: dict[str, list[float]] = {url: [] for url in urls}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            for url, moments in self.not_ready.items():
                if not ready(url):
                    moments.append(time.monotonic())

    def __enter__(self) -> ReadinessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(10)


def first_success_after(kill_at: float, call, limit_s: float) -> float:
    """Seconds from `kill_at` until `call()` (no retries) first succeeds."""
    while time.monotonic() - kill_at < limit_s:
        try:
            call()
            return time.monotonic() - kill_at
        except mmserve.MmserveError:
            time.sleep(0.05)
    raise AssertionError(f"no successful request within {limit_s} s of the fault")


def wait_until(predicate, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def inject(stack, gallery, fault, affected: list[str], kind: str, dead_pid: int | None = None,
           watch_health: bool = True):
    """Run `fault()` under load; check readiness, recovery and the SDK calls after it. Returns recovery s.

    `dead_pid`: the process the fault ends; recovery is measured once it has (a SIGSEGV handler takes a while).
    `watch_health`: the server and `affected` models must say not ready in between.
    """
    images = [p.read_bytes() for p in gallery[:4]]
    base = stack.http_url
    watched = [f"{base}/v2/health/ready", *[f"{base}/v2/models/{m}/ready" for m in affected]]
    with mmserve.Client(stack.grpc_url, retries=0) as probe:
        direct = Transport(probe.options)

        def raw(model: str, name: str, item: bytes, output: str):
            try:
                return direct.infer(model, name, np.array([[item]], dtype=np.object_), "BYTES", output=output)
            except Exception as error:  # noqa: BLE001 - as the SDK would raise it
                raise classify(error, None) from error

        call = {
            "image": lambda: probe.embed_images(images[:1]),
            "text": lambda: probe.embed_texts(["x"]),
            # The decode-only models are on no SDK path: call them directly.
            "image_preprocess": lambda: raw("image_preprocess", "image", images[0], "pixels"),
            "text_tokenize": lambda: raw("text_tokenize", "text", b"x", "token_ids"),
        }[kind]
        wait_until(lambda: ready(watched[0]), 60, "not ready before the fault")
        with Load(stack.grpc_url, images) as load, ReadinessWatch(watched) as watch:
            time.sleep(0.5)
            kill_at = time.monotonic()
            fault()
            if dead_pid is not None:
                wait_until(lambda: _gone([dead_pid]), RECOVERY_LIMIT_S, "the fault did not end the process")
            recovery = first_success_after(kill_at, call, RECOVERY_LIMIT_S)
            wait_until(lambda: ready(watched[0]), RECOVERY_LIMIT_S, "readiness did not come back")
            recovered_at = time.monotonic()
            # SDK calls sent after recovery, under the same load (a call still in its retry backoff from the
            # outage starts its next one late: wait for a few of each kind)
            wait_until(lambda: all(load.successes_started_after(recovered_at, k) >= 3 for k in ("image", "text")),
                       30, "the load was not served after recovery")
        direct.close()
    if watch_health:
        for url, moments in watch.not_ready.items():
            assert any(kill_at <= moment <= recovered_at for moment in moments), f"{url} never said not ready"
    assert load.failures_started_after(recovered_at) == []
    assert recovery <= RECOVERY_LIMIT_S
    return recovery


@pytest.mark.parametrize("model, kind, affected", [
    ("embed_image", "image", ["embed_image", "image_tower"]),  # the tower's ensemble runs in embed_image
    ("embed_text", "text", ["embed_text", "text_tower"]),
    ("image_preprocess", "image_preprocess", ["image_preprocess"]),
    ("text_tokenize", "text_tokenize", ["text_tokenize"]),
])
def test_a_killed_model_process_is_reloaded(stack, gallery, model, kind, affected):
    (pid,) = model_processes(stack.triton.process.pid)[model]
    triton_pid = stack.triton.process.pid
    before = len(stack.events)
    inject(stack, gallery, lambda: os.kill(pid, signal.SIGKILL), affected, kind, dead_pid=pid)
    assert stack.triton.process.pid == triton_pid, "a model reload, not a server restart"
    assert model_processes(triton_pid)[model] != [pid]
    causes = [what for _, part, what in stack.events[before:] if part == model]
    assert any(f"{pid} was killed by signal 9 (SIGKILL)" in cause for cause in causes), stack.events[before:]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV])
def test_a_killed_tritonserver_is_restarted_on_the_same_ports(stack, gallery, signum):
    old = stack.triton.process.pid
    ports = (stack.triton.http_port, stack.triton.grpc_port)
    before = len(stack.events)
    inject(stack, gallery, lambda: os.kill(old, signum), ["embed_image", "embed_text"], "text", dead_pid=old)
    assert stack.triton.process.pid != old and (stack.triton.http_port, stack.triton.grpc_port) == ports
    name = signal.Signals(signum).name
    assert any(f"exited with signal {signum} ({name})" in what for _, _, what in stack.events[before:])


def test_a_stopped_model_process_is_found_and_reloaded(stack, gallery):
    """SIGSTOP: the process exists but cannot answer (Triton then calls it not healthy)."""
    (pid,) = model_processes(stack.triton.process.pid)["embed_text"]
    before = len(stack.events)
    inject(stack, gallery, lambda: os.kill(pid, signal.SIGSTOP), ["embed_text", "text_tower"], "text")
    assert any(part == "embed_text" for _, part, _ in stack.events[before:])


def test_a_hung_tritonserver_is_killed_and_restarted(stack, gallery):
    """SIGSTOP on tritonserver: no answer for hang_timeout_s (3 s here), then SIGKILL and a restart."""
    old = stack.triton.process.pid
    before = len(stack.events)
    inject(stack, gallery, lambda: os.kill(old, signal.SIGSTOP), ["embed_text"], "text")
    assert stack.triton.process.pid != old
    assert any("did not answer for 3 s" in what for _, _, what in stack.events[before:])


def test_a_killed_front_door_is_restarted(stack, gallery):
    """nginx's workers outlive a killed master and keep serving until the supervisor replaces them all."""
    old = stack.front.process.pid
    inject(stack, gallery, lambda: os.kill(old, signal.SIGKILL), [], "text", dead_pid=old, watch_health=False)
    # The old workers serve the load meanwhile, so the replacement may come after the load has been answered
    # (for instance when the supervisor is still finishing the previous test's tritonserver restart).
    wait_until(lambda: stack.front.process is not None and stack.front.process.pid != old, RECOVERY_LIMIT_S,
               f"the front door was not replaced: {stack.events[-6:]}")
    assert not _processes_in_group(old), "workers of the killed nginx were left running"


def test_restarts_past_the_cap_end_in_not_live(triton_repository, bundled_settings, tmp_path, stack_factory):
    with stack_factory(triton_repository, bundled_settings.cache_dir, tmp_path, max_restarts=2,
                       backoff_s=0) as served:
        for _ in range(3):
            pid = served.triton.process.pid
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: served.triton.process is None or served.triton.process.pid != pid
                       or not served.state.live()[0], 30, "no restart")
            wait_until(lambda: served.state.ready()[0] or not served.state.live()[0], 30, "neither back nor down")
        live, why = served.state.live()
        assert not live and "giving up" in why
        assert not ready(f"{served.http_url}/v2/health/live")


def _processes_in_group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _serve_command(repository: Path, ports: dict[str, int]) -> list[str]:
    command = [sys.executable, "-m", "mmserve.cli", "serve", "--repository", str(repository)]
    for flag, port in ports.items():
        command += [flag, str(port)]
    return command


def _start_cli_server(repository, bundled_settings, port_factory):
    ports = {"--http-port": port_factory(), "--grpc-port": port_factory(), "--metrics-port": port_factory()}
    env = dict(os.environ, MMSERVE_MODEL_DIR=str(bundled_settings.model_dir),
               MMSERVE_CACHE_DIR=str(bundled_settings.cache_dir))
    process = subprocess.Popen(_serve_command(repository, ports), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("Ctrl-C stops the server"):
            break
    assert process.poll() is None, "".join(output)
    return process, ports, output


def _descendants(pid: int) -> list[int]:
    from mmserve.serving.supervisor import _children

    found, queue = [], [pid]
    while queue:
        for child in _children(queue.pop()):
            found.append(child)
            queue.append(child)
    return found


def _gone(pids: list[int]) -> bool:
    from mmserve.serving.supervisor import process_end

    return all(process_end(pid) is not None for pid in pids)


def test_ctrl_c_during_a_restart_stops_everything(triton_repository, bundled_settings, port_factory):
    process, ports, _ = _start_cli_server(triton_repository, bundled_settings, port_factory)
    try:
        children = _descendants(process.pid)
        triton = next(pid for pid in children if b"tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes())
        os.kill(triton, signal.SIGKILL)
        wait_until(lambda: any(b"tritonserver" in _cmdline(pid) for pid in _descendants(process.pid)
                               if pid != triton), 20, "no restart began")
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest[-3000:]
        assert time.monotonic() - started < 30 and "Traceback" not in rest
        wait_until(lambda: _gone(children), 10, "processes left behind")
        assert not ready(f"http://127.0.0.1:{ports['--http-port']}/v2/health/live")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_killed_supervisor_leaves_no_process_behind(triton_repository, bundled_settings, port_factory):
    process, _, _ = _start_cli_server(triton_repository, bundled_settings, port_factory)
    children = _descendants(process.pid)
    assert any(b"nginx" in _cmdline(pid) for pid in children) and any(b"tritonserver" in _cmdline(pid)
                                                                       for pid in children)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    wait_until(lambda: _gone(children), 30, f"left behind: {[p for p in children if not _gone([p])]}")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_port_in_use_is_a_clear_start_error(triton_repository, bundled_settings, tmp_path):
    import socket

    from mmserve.serving.server import ServerStartError, free_port
    from mmserve.serving.supervisor import Supervisor
    from mmserve.config import ServeOptions

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        options = ServeOptions(http_port=taken.getsockname()[1], grpc_port=free_port(), metrics_port=free_port())
        stack = Supervisor(triton_repository, options, cache_dir=bundled_settings.cache_dir)
        with pytest.raises(ServerStartError, match="taken"):
            stack.start()
    assert stack.triton.process is None and not stack.run_dir.exists()
