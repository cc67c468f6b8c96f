"""The front door: nginx in front of tritonserver's HTTP, gRPC and metrics endpoints.

tritonserver 2.51 (the binary in nvidia-pytriton) can be crashed or wedged from
its HTTP port (see README, Operations: a large x-www-form-urlencoded body, a
million tiny chunks, deeply nested JSON, a gzip bomb; a compressed gRPC message
inflates without bound), so clients never reach it: Triton binds loopback
ports and nginx (Debian's package) listens where clients can. nginx reads each
request whole (chunked or not, slow or not) before Triton sees a byte of it,
and refuses what Triton cannot take:

- bodies over `max_request_bytes` (413 / RESOURCE_EXHAUSTED), JSON over
  `max_json_bytes` (413), content types other than JSON / octet-stream (415),
  compressed bodies (415 / UNIMPLEMENTED);
- more than `max_in_flight` requests at once per port (503 / UNAVAILABLE);
- inference, metadata and statistics without a valid API key (401 /
  UNAUTHENTICATED) when keys are set; health stays open for probes.

TLS (and mutual TLS) terminate here. Health requests go to the supervisor's
health service, which knows whether each model process can answer.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from mmserve.config import ServeOptions
from mmserve.serving.server import ServerStartError, exit_with_parent, terminate_group

# Bearer tokens (RFC 6750 b64token); at least this long, so that a key is not guessable.
API_KEY_PATTERN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MIN_API_KEY_LENGTH = 16


def default_in_flight(repository: Path) -> int:
    """1.5 times the largest `max_batch_size` of the repository's models (96 when none is found)."""
    batches = [int(m.group(1)) for config in Path(repository).glob("*/config.pbtxt")
               if (m := re.search(r"(?m)^max_batch_size:\s*(\d+)", config.read_text()))]
    return max(1, round(1.5 * max(batches, default=64)))


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if found is None:
        raise ServerStartError("the front door needs nginx: apt-get install nginx (or nginx-light)")
    return found


def check_api_key(key: str) -> str:
    if not API_KEY_PATTERN.fullmatch(key):
        raise ValueError("an API key may hold only letters, digits and - . _ ~ + / (then = padding)")
    if len(key) < MIN_API_KEY_LENGTH:
        raise ValueError(f"an API key needs at least {MIN_API_KEY_LENGTH} characters (got {len(key)})")
    return key


def decimal_at_most(limit: int) -> str:
    """A regular expression matching the decimal numbers 0..limit (nginx maps cannot compare numbers)."""
    digits = str(limit)
    shorter = f"[0-9]{{1,{len(digits) - 1}}}" if len(digits) > 1 else None
    same_length = []
    for i, digit in enumerate(digits):
        if digit != "0":
            rest = len(digits) - i - 1
            same_length.append(digits[:i] + f"[0-{int(digit) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    same_length.append(digits)
    return "(" + "|".join(([shorter] if shorter else []) + same_length) + ")"


@dataclasses.dataclass(frozen=True)
class FrontDoorConfig:
    """What the nginx configuration is rendered from: the public side (`options`) and the loopback ports behind."""

    options: ServeOptions
    max_in_flight: int  # per port (the options' value, or the one derived from the repository)
    triton_http_port: int
    triton_grpc_port: int
    triton_metrics_port: int
    health_http_port: int
    health_grpc_port: int

    def render(self, run_dir: Path) -> str:
        o = self.options
        if (o.tls_cert is None) != (o.tls_key is None):
            raise ValueError("TLS needs both a certificate (--tls-cert) and its key (--tls-key)")
        if o.tls_client_ca is not None and o.tls_cert is None:
            raise ValueError("mutual TLS (--tls-client-ca) needs a server certificate and key")
        keys = [check_api_key(key) for key in o.api_keys_in_effect()]
        tls = o.tls_cert is not None
        values = {
            "run_dir": str(run_dir),
            "workers": o.front_workers,
            "log_level": o.front_log_level,
            "open_files": 4 * 4096 + 64,
            "worker_connections": 4096,
            "access_log": f"{o.access_log} combined" if o.access_log else "off",
            "header_timeout": o.header_timeout_s,
            "body_timeout": o.body_timeout_s,
            "request_timeout": o.request_timeout_s,
            "max_request_bytes": o.max_request_bytes,
            "max_json_bytes": o.max_json_bytes,
            "json_header_length": decimal_at_most(o.max_json_bytes),
            "max_in_flight": self.max_in_flight,
            "api_key_default": 0 if keys else 1,
            "api_key_entries": "\n".join(f'        "Bearer {key}" 1;' for key in keys),
            "client_cert_default": 0 if o.tls_client_ca is not None else 1,
            "tls": self._tls_lines() if tls else "",
            "http_listen": self._listen(o.http_port, tls),
            "grpc_listen": self._listen(o.grpc_port, tls),
            "metrics_listen": self._listen(o.metrics_port, tls),
            "triton_http_port": self.triton_http_port,
            "triton_grpc_port": self.triton_grpc_port,
            "triton_metrics_port": self.triton_metrics_port,
            "health_http_port": self.health_http_port,
            "health_grpc_port": self.health_grpc_port,
        }
        template = (resources.files("mmserve.serving") / "templates" / "nginx.conf.in").read_text()
        return re.sub(r"@([a-z_]+)@", lambda m: str(values[m.group(1)]), template)

    def _listen(self, port: int, tls: bool) -> str:
        host = "127.0.0.1" if self.options.host == "localhost" else self.options.host
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return address + (" ssl" if tls else "")

    def _tls_lines(self) -> str:
        o = self.options
        if o.tls_cert is None or o.tls_key is None:
            raise ValueError("TLS needs both a certificate and its key")
        lines = [
            f"ssl_certificate {o.tls_cert.resolve()};",
            f"ssl_certificate_key {o.tls_key.resolve()};",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "ssl_session_cache shared:mmserve_tls:10m;",
        ]
        if o.tls_client_ca is not None:
            # "optional": health probes need no certificate; everything else checks $ssl_client_verify.
            lines += [f"ssl_client_certificate {o.tls_client_ca.resolve()};", "ssl_verify_client optional;"]
        return "\n".join("        " + line for line in lines)


class FrontDoor:
    """One nginx master (and its workers) serving `config`, with its files in `run_dir`."""

    def __init__(self, config: FrontDoorConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.process: subprocess.Popen | None = None

    @property
    def config_file(self) -> Path:
        return self.run_dir / "nginx.conf"

    def write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # nginx's workers run as nobody when started by root: they must reach the temp folders.
            os.chmod(self.run_dir, 0o711)
        # The API keys are in it: readable by this user only (nginx's master reads it before dropping rights).
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(self.config.render(self.run_dir))
        check = subprocess.run([nginx_binary(), "-t", "-q", "-p", str(self.run_dir), "-c", str(self.config_file)],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise ServerStartError(f"the front door's nginx configuration is invalid:\n{check.stderr.strip()}")

    def start(self) -> FrontDoor:
        self.write_config()
        self.process = subprocess.Popen(
            [nginx_binary(), "-p", str(self.run_dir), "-c", str(self.config_file)],
            # preexec_fn only calls prctl (async-signal-safe) between fork and exec.
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=exit_with_parent,  # noqa: PLW1509
        )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL of its whole process group (workers included)."""
        process, self.process = self.process, None
        return None if process is None else terminate_group(process, timeout_s)
