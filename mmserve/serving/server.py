"""Start the real `tritonserver` (the binary in the nvidia-pytriton wheel) on a model repository.

The wheel's binary needs three things to run Python-backend models from a
plain virtual environment (PyTriton sets up the same):

- a backend directory holding the Python backend plus the stub built for this
  interpreter's version (`python_backend_stubs/3.X/triton_python_backend_stub`);
- this interpreter's `bin/` first on `PATH`, so the stub's embedded Python finds
  the environment's packages (numpy, openvino, mmserve);
- `LD_LIBRARY_PATH` holding libpython's directory and `nvidia_pytriton.libs`.

Without them the stub crashes on the first BYTES input, or fails with
"'_thread.RLock' object has no attribute '_recursion_count'".
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

# Triton's admin APIs: closed (behind a header nobody knows) unless `admin_key` is given.
ADMIN_APIS = "model-repository,shared-memory,logging,trace"
ADMIN_HEADER = "mmserve-admin-key"


class ServerStartError(RuntimeError):
    """tritonserver exited or did not become ready; the message ends with its log."""


def describe_exit(code: int | None) -> str:
    """"status 1", "signal 9 (SIGKILL)": how a child process ended, from its return code."""
    if code is None:
        return "no status"
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1", exclude: Iterable[int] = ()) -> int:
    """A port nothing listens on right now (the OS's choice), never one this process handed out before nor one
    in `exclude` (ports chosen but not bound yet: the OS may offer a released port again at once)."""
    import socket

    excluded = set(exclude)
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT and port not in excluded:
            _HANDED_OUT.add(port)
            return port
    raise OSError("no free port found in 100 tries")


def pytriton_root() -> Path:
    """The wheel's tritonserver folder, found without importing pytriton (its Python API's deps are not needed)."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError(
            "tritonserver comes from the nvidia-pytriton wheel: pip install nvidia-pytriton --no-deps"
        )
    return Path(spec.submodule_search_locations[0]) / "tritonserver"


def backend_directory(cache_dir: Path) -> Path:
    """A copy of the wheel's backends with the Python stub for this interpreter (made once)."""
    source = pytriton_root()
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / python_version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerStartError(f"nvidia-pytriton has no Python backend stub for Python {python_version}")
    target = cache_dir / "triton-backends" / f"pytriton-{metadata.version('nvidia-pytriton')}-py{python_version}"
    if not (target / "python" / stub.name).is_file():
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source / "backends", staging)
        shutil.copy2(stub, staging / "python" / stub.name)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libs = [sysconfig.get_config_var("LIBDIR"), str(pytriton_root().parent.parent / "nvidia_pytriton.libs")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    return env


def exit_with_parent() -> None:
    """In the child: get SIGTERM if the launching thread dies (even by SIGKILL), so no server is orphaned.

    Linux ties this to the thread that started the child, not the process: start
    long-lived children from a thread that lives as long as they should.
    """
    import ctypes

    pr_set_pdeathsig = 1  # PR_SET_PDEATHSIG, <linux/prctl.h>
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass  # not Linux/glibc: the server outlives a killed launcher, as any child would


def terminate_group(process: subprocess.Popen, timeout_s: float) -> int:
    """SIGTERM, up to `timeout_s` to exit, then SIGKILL to whatever is left of its process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
    return process.returncode


# Triton's HTTP threads parse JSON recursively: at glibc's default 8 MiB stack, about 105,000 nesting levels
# crash the server (measured). Thread stacks take their size from RLIMIT_STACK, so 128 MiB holds 1.6 million,
# more than the front door's JSON limit (1 MiB) can nest. Only address space is reserved, not memory.
TRITON_STACK_BYTES = 128 << 20


def _triton_child_setup() -> None:
    import resource

    exit_with_parent()
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    wanted = TRITON_STACK_BYTES if hard == resource.RLIM_INFINITY else min(TRITON_STACK_BYTES, hard)
    try:
        resource.setrlimit(resource.RLIMIT_STACK, (wanted, hard))
    except (ValueError, OSError):
        pass


@dataclasses.dataclass
class TritonServer:
    """One tritonserver process. Use as a context manager, or `start()` / `stop()`."""

    repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    admin_key: str | None = None
    cache_dir: Path = Path.home() / ".cache" / "mmserve"
    log_file: Path | None = None  # None: tritonserver logs to this process's stdout/stderr
    log_verbose: int = 0
    exit_timeout_s: int = 10
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = dataclasses.field(default=None, init=False, repr=False)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        restricted = f"{ADMIN_APIS}:{ADMIN_HEADER}={self._admin_key()}"
        return [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_directory(self.cache_dir)}",
            # Explicit control: the supervisor reloads a model whose process died (repository API, admin key).
            "--model-control-mode=explicit",
            "--load-model=*",
            "--strict-readiness=true",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--http-restricted-api={restricted}",
            f"--grpc-restricted-protocol={restricted}",
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]

    @property
    def admin_headers(self) -> dict[str, str]:
        return {ADMIN_HEADER: self._admin_key()}

    def _admin_key(self) -> str:
        if self.admin_key is None:
            self.admin_key = secrets.token_hex(32)  # known to this process only
        return self.admin_key

    def start(self, timeout_s: float = 300.0, stop: threading.Event | None = None) -> TritonServer:
        if not (self.repository / "embed_image" / "config.pbtxt").is_file():
            raise ServerStartError(f"{self.repository} is not an mmserve model repository: run `mmserve build`")
        output = None
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            output = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            # A new session: Ctrl-C in a terminal reaches us, and we shut Triton down in order.
            self.process = subprocess.Popen(
                self.command(), env=server_environment(), stdout=output, stderr=subprocess.STDOUT if output else None,
                # preexec_fn only sets an rlimit and calls prctl between fork and exec.
                start_new_session=True, preexec_fn=_triton_child_setup,  # noqa: PLW1509
            )
        finally:
            if output is not None:
                output.close()
        self.wait_ready(timeout_s, stop)
        return self

    def wait_ready(self, timeout_s: float, stop: threading.Event | None = None) -> None:
        """Until ready; `stop` set (Ctrl-C) aborts the wait with `ServerStartError`."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ServerStartError(f"tritonserver exited with {describe_exit(code)}{self._log_tail()}")
            if self.is_ready():
                return
            if stop.wait(0.1):
                self.stop()
                raise ServerStartError("interrupted while tritonserver was starting")
        self.stop()
        raise ServerStartError(f"tritonserver not ready after {timeout_s:.0f} s{self._log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def is_ready(self) -> bool:
        return self._health("ready")

    def is_live(self, timeout_s: float = 1.0) -> bool:
        return self._health("live", timeout_s)

    def _health(self, kind: str, timeout_s: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/{kind}", timeout=timeout_s) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> int | None:
        """SIGTERM (Triton drains in-flight requests for up to `exit_timeout_s`), then SIGKILL."""
        process, self.process = self.process, None
        # Then the model processes it left behind (they also exit on their own once they notice).
        return None if process is None else terminate_group(process, self.exit_timeout_s + 10)

    def wait(self) -> int:
        if self.process is None:
            raise RuntimeError("server not started")
        return self.process.wait()

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_file is None or not self.log_file.is_file():
            return ""
        tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- tritonserver log (" + str(self.log_file) + ") ---\n" + "\n".join(tail)

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info) -> None:
        self.stop()
