"""`mmserve serve`: tritonserver behind the front door, watched and brought back when part of it fails.

    stack = Supervisor(repository, ServeOptions(...))
    stack.start(stop)    # health service, front door, tritonserver (ready), the models it serves
    code = stack.run(stop)   # watch until `stop` is set (Ctrl-C) or the restarts run out
    stack.stop()

    with supervised(repository, ServeOptions(...)) as stack:   # the same, watched from a thread
        mmserve.Client(stack.grpc_url).embed_texts([...])

What is watched, every `check_interval_s`:

- tritonserver itself: exited (SIGKILL, SIGSEGV, ...) -> restarted on the same
  loopback ports; alive but not answering its own liveness for
  `hang_timeout_s` -> killed, then restarted.
- each model process (Python-backend stub): gone or a zombie -> the model is
  reloaded (unload + load through Triton's repository API, which starts new
  processes and reloads the ensembles that chain it); tried and measured here,
  this takes well under a second on the bundled model while the other models
  keep serving.
- each model's answers: when a model has completed nothing since the last
  look, a one-item probe goes to it directly; "stub process is not healthy"
  (a stopped process) or no answer within `hang_timeout_s` while nothing else
  completes (a hung one) -> its processes are killed and it is reloaded.
- the front door (nginx): exited -> restarted.

Each restart is logged with its cause, waits a backoff that doubles from
`backoff_s` (capped at 30 s) and counts against `max_restarts` per
`restart_window_s`; a model that keeps failing escalates to a tritonserver
restart, and a tritonserver or front door that keeps failing ends the run
(liveness goes false and `run` returns 1, for an orchestrator to act on).
While anything a model needs cannot answer, its readiness (and the server's)
says so, through the health service the front door routes probes to.

Processes are started from the thread that calls `start` and `run` (Linux ties
"exit with the parent" to that thread): call both from the same long-lived one.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mmserve.config import ServeOptions
from mmserve.serving.frontdoor import FrontDoor, FrontDoorConfig, default_in_flight
from mmserve.serving.health import HealthService, HealthState
from mmserve.serving.server import ServerStartError, TritonServer, describe_exit, free_port

log = logging.getLogger("mmserve.serve")

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "mmserve"
# A 1x1 PNG: the probe for models that take encoded images.
_PROBE_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8ffff3f0005fe02fe"
    "a7359a800000000049454e44ae426082")


@dataclasses.dataclass
class _Model:
    """A model Triton runs in processes of its own (not an ensemble)."""

    name: str
    instances: int
    probe: list  # [(input name, array, datatype)]
    pids: set[int] = dataclasses.field(default_factory=set)
    completed: int = -1  # Triton's success count at the last look
    idle_since: float = 0.0  # when that count last changed (or the last probe began)
    probe_job: Future | None = None
    reload_job: Future | None = None


class _RestartLog:
    """Restart times per part, for the backoff and the cap."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self._times: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def record(self, part: str) -> tuple[int, float] | None:
        """(restarts in the window including this one, backoff to wait), or None when over the cap."""
        now = time.monotonic()
        times = self._times[part]
        while times and now - times[0] > self.options.restart_window_s:
            times.popleft()
        if len(times) >= self.options.max_restarts:
            return None
        times.append(now)
        if len(times) == 1:
            return 1, 0.0  # a first failure is restarted at once
        return len(times), min(30.0, self.options.backoff_s * 2 ** (len(times) - 2))

    def forget(self, part: str) -> None:
        self._times.pop(part, None)


class Supervisor:
    def __init__(self, repository: Path, options: ServeOptions | None = None, *,
                 cache_dir: Path = DEFAULT_CACHE_DIR) -> None:
        self.options = options = options or ServeOptions()
        self.state = HealthState()
        # tritonserver's own ports, loopback only; never the front door's (chosen, perhaps not bound yet).
        front = (options.http_port, options.grpc_port, options.metrics_port)
        self.triton = TritonServer(
            repository=Path(repository).resolve(), host="127.0.0.1", http_port=free_port(exclude=front),
            grpc_port=free_port(exclude=front), metrics_port=free_port(exclude=front), admin_key=options.admin_key, cache_dir=cache_dir, log_file=options.triton_log,
            log_verbose=options.log_verbose,
        )
        self.max_in_flight = options.max_in_flight or default_in_flight(self.triton.repository)
        self.run_dir = Path(tempfile.mkdtemp(prefix="mmserve-serve-"))
        self.health: HealthService | None = None
        self.front: FrontDoor | None = None
        self.models: dict[str, _Model] = {}
        self._restarts = _RestartLog(options)
        self._workers = ThreadPoolExecutor(4, thread_name_prefix="mmserve-supervisor")
        self._local = threading.local()
        self._generation = 0  # tritonserver starts so far: jobs of an older one are void
        self._triton_unanswered_since: float | None = None
        self._last_liveness_check = 0.0
        self._last_answer_check = 0.0
        self.events: list[tuple[float, str, str]] = []  # (time.time(), part, what happened), for tests

    # -- public ----------------------------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"{'https' if self.options.tls_cert else 'http'}://{self._client_host()}:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{'grpcs' if self.options.tls_cert else 'grpc'}://{self._client_host()}:{self.options.grpc_port}"

    @property
    def metrics_url(self) -> str:
        scheme = "https" if self.options.tls_cert else "http"
        return f"{scheme}://{self._client_host()}:{self.options.metrics_port}/metrics"

    def start(self, stop: threading.Event | None = None) -> Supervisor:
        """Health service and front door first (probes get answers during a long warm-up), then tritonserver."""
        stop = stop or threading.Event()
        try:
            self.health = HealthService(self.state).start()
            self.front = FrontDoor(self._front_config(), self.run_dir)
            self.front.start()
            self._wait_front_door()
            self.state.beat()
            self.triton.start(self.options.start_timeout_s, stop)
            self._generation += 1
            self._discover_models()
            self.state.triton_down(None)
        except BaseException:
            self.stop()
            raise
        return self

    def run(self, stop: threading.Event) -> int:
        """Watch until `stop` is set (returns 0) or a part keeps failing past its cap (returns 1)."""
        while not stop.is_set():
            self.state.beat()
            try:
                if not self._check(stop):
                    return 1
            except ServerStartError as error:
                if stop.is_set():
                    break
                log.error("%s", error)
            except Exception:  # a supervisor that stops watching is worse than one that logs
                log.exception("supervisor check failed; checking again")
            stop.wait(self.options.check_interval_s)
        return 0

    def stop(self) -> int | None:
        """tritonserver first (it drains what it holds), then the front door and the health service.

        Returns tritonserver's exit status (None if it was not running)."""
        self._generation += 1
        status = self.triton.stop()
        if self.front is not None:
            self.front.stop()
        if self.health is not None:
            self.health.stop()
            self.health = None
        self._workers.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        return status

    # -- one round of checks ---------------------------------------------------------------------------------

    def _check(self, stop: threading.Event) -> bool:
        if not self._door.alive():
            cause = describe_exit(self._door.returncode)
            if not self._restart_front_door(f"exited with {cause}", stop):
                return False
        if not self.triton.alive():
            cause = describe_exit(self.triton.process.returncode if self.triton.process else None)
            return self._restart_triton(f"exited with {cause}", stop)
        answering = self._triton_answering()
        if answering is None:
            self._kill_triton()
            return self._restart_triton(f"did not answer for {self.options.hang_timeout_s:.0f} s (killed)", stop)
        now = time.monotonic()
        completed = None
        if answering and now - self._last_answer_check >= min(1.0, self.options.probe_interval_s):
            self._last_answer_check = now
            completed = self._completed_counts()
        for model in self.models.values():
            if model.reload_job is not None:
                if not model.reload_job.done():
                    continue
                failure, model.reload_job = model.reload_job.result(), None
                if failure is not None:
                    self._schedule_reload(model, f"reload failed ({failure})")
                    continue
            ended = self._ended_process(model)
            if ended is not None:
                self._schedule_reload(model, ended)
            elif completed is not None:
                self._check_answers(model, completed.get(model.name), now)
        return True

    def _ended_process(self, model: _Model) -> str | None:
        for pid in sorted(model.pids):
            ended = process_end(pid)
            if ended is not None:
                return f"model process {pid} {ended}"
        return None

    def _check_answers(self, model: _Model, completed: int | None, now: float) -> None:
        """Probe a model that completed nothing for a probe interval; act on what the probe says."""
        if model.probe_job is not None:
            if not model.probe_job.done():
                return
            verdict, model.probe_job = model.probe_job.result(), None
            if verdict is not None:
                self._schedule_reload(model, verdict)
                return
        if completed is None:
            return
        if completed != model.completed:
            model.completed, model.idle_since = completed, now
        elif now - model.idle_since >= self.options.probe_interval_s:
            model.idle_since = now
            model.probe_job = self._workers.submit(self._probe, model, self._generation, completed)

    # -- tritonserver ----------------------------------------------------------------------------------------

    def _restart_triton(self, cause: str, stop: threading.Event) -> bool:
        self._generation += 1
        self.state.triton_down(f"tritonserver {cause}; restarting")
        self._event("tritonserver", f"tritonserver {cause}")
        while not stop.is_set():
            go = self._before_restart("tritonserver", cause, stop)
            if go is not True:
                return go is None
            started = time.monotonic()
            self.triton.stop()
            try:
                self.triton.start(self.options.start_timeout_s, stop)
            except ServerStartError as error:
                cause = f"failed to start ({str(error).splitlines()[0]})"
                continue
            self._generation += 1
            self._discover_models()
            self.state.triton_down(None)
            self._triton_unanswered_since = None
            self._event("tritonserver", f"ready again after {time.monotonic() - started:.1f} s")
            log.warning("tritonserver ready again (%.1f s after the restart began)", time.monotonic() - started)
            return True
        return True

    def _triton_answering(self) -> bool | None:
        """tritonserver's own liveness, asked about once a second: True, False (not now), or None once it has not
        answered for hang_timeout_s (hung)."""
        now = time.monotonic()
        if now - self._last_liveness_check < min(self.options.probe_interval_s, 1.0):
            return self._triton_unanswered_since is None
        self._last_liveness_check = now
        if self.triton.is_live():
            self._triton_unanswered_since = None
            return True
        if self._triton_unanswered_since is None:
            self._triton_unanswered_since = now
        return None if now - self._triton_unanswered_since >= self.options.hang_timeout_s else False

    def _kill_triton(self) -> None:
        if self.triton.process is not None:
            try:
                os.killpg(self.triton.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.triton.process.wait()

    def _discover_models(self) -> None:
        """The models tritonserver serves, what each ensemble chains, and each model's processes."""
        index = self._admin("POST", "/v2/repository/index", {"ready": True})
        configs = {entry["name"]: self._get(f"/v2/models/{entry['name']}/config", 30) for entry in index}
        steps: dict[str, tuple[str, ...]] = {}
        models: dict[str, _Model] = {}
        for name, config in configs.items():
            if config.get("platform") == "ensemble":
                chained = [s["model_name"] for s in config.get("ensemble_scheduling", {}).get("step", [])]
                steps[name] = tuple(chained)
            else:
                steps[name] = (name,)
                count = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
                models[name] = _Model(name, count, _probe_inputs(config))
        self.models = models
        self._refresh_pids()
        self.state.set_models(steps)
        for name in models:
            self.state.model_down(name, None)

    def _refresh_pids(self, only: str | None = None) -> None:
        found = model_processes(self._triton_pid)
        for model in self.models.values():
            if only is None or model.name == only:
                model.pids = set(found.get(model.name, ()))

    # -- one model -------------------------------------------------------------------------------------------

    def _schedule_reload(self, model: _Model, cause: str) -> None:
        attempt = self._restarts.record(model.name)
        if attempt is None:
            # Reloading does not help: start the whole server afresh (the check loop sees it gone).
            self._event(model.name, f"{cause}; {self.options.max_restarts} reloads did not last, restarting "
                                    "tritonserver")
            log.error("%s: %s; %d reloads within %.0f s did not last: restarting tritonserver", model.name, cause,
                      self.options.max_restarts, self.options.restart_window_s)
            self._restarts.forget(model.name)
            self._kill_triton()
            return
        count, backoff = attempt
        self.state.model_down(model.name, f"{cause}; reloading")
        self._event(model.name, cause)
        log.warning("%s: %s; reloading in %.1f s (restart %d of %d per %.0f s)", model.name, cause, backoff, count,
                    self.options.max_restarts, self.options.restart_window_s)
        model.probe_job = None
        model.reload_job = self._workers.submit(self._reload, model, backoff, self._generation)

    def _reload(self, model: _Model, backoff: float, generation: int) -> str | None:
        """None once the model answers again (or this tritonserver is gone); else what failed."""
        time.sleep(backoff)
        if generation != self._generation:
            return None
        started = time.monotonic()
        for pid in model.pids:  # a hung or stopped process first: unloading waits for it otherwise
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self._admin("POST", f"/v2/repository/models/{model.name}/unload", {})
            self._admin("POST", f"/v2/repository/models/{model.name}/load", {})
            self._wait_model_ready(model, generation)
            verdict = self._probe(model, generation, None)
            if verdict is not None:
                raise RuntimeError(verdict)
        except Exception as error:  # noqa: BLE001 - any failure: the check loop schedules another reload
            return None if generation != self._generation else str(error)
        if generation != self._generation:
            return None
        self._refresh_pids(only=model.name)
        model.completed, model.idle_since = -1, time.monotonic()
        self.state.model_down(model.name, None)
        self._event(model.name, f"answering again after {time.monotonic() - started:.1f} s")
        log.warning("%s: answering again (%.1f s after the reload began)", model.name, time.monotonic() - started)
        return None

    def _wait_model_ready(self, model: _Model, generation: int) -> None:
        deadline = time.monotonic() + self.options.start_timeout_s
        while time.monotonic() < deadline and generation == self._generation:
            try:
                with urllib.request.urlopen(f"{self.triton.http_url}/v2/models/{model.name}/ready", timeout=2):
                    pids = model_processes(self._triton_pid).get(model.name, [])
                    if len(pids) >= model.instances:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError("not ready after the reload")

    def _probe(self, model: _Model, generation: int, completed_before: int | None) -> str | None:
        """None when the model answers (a result, or a refusal its own code wrote); else what is wrong.

        A probe that times out while the model completed other requests (`completed_before` changed) found
        a busy model, not a hung one.
        """
        import tritonclient.grpc as tc
        from tritonclient.utils import InferenceServerException

        if generation != self._generation:
            return None
        client = getattr(self._local, "client", None)
        if client is None or self._local.generation != generation:
            client = self._local.client = tc.InferenceServerClient(self.triton.grpc_url.removeprefix("grpc://"))
            self._local.generation = generation
        inputs = []
        for name, array, datatype in model.probe:
            tensor = tc.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            client.infer(model.name, inputs, client_timeout=self.options.hang_timeout_s)
        except InferenceServerException as error:
            status, message = str(error.status() or ""), error.message() or ""
            if "INVALID_ARGUMENT" in status:
                return None  # the model's code answered
            if "not healthy" in message:
                return f"model process not healthy ({message})"
            if "DEADLINE_EXCEEDED" in status or "Deadline" in message:
                completed = self._completed_counts().get(model.name)
                if completed_before is not None and completed is not None and completed != completed_before:
                    return None
                return f"no answer within {self.options.hang_timeout_s:.0f} s (hung)"
            return None  # unloading, shutting down: the process checks decide
        return None

    # -- front door ------------------------------------------------------------------------------------------

    def _front_config(self) -> FrontDoorConfig:
        return FrontDoorConfig(
            self.options, max_in_flight=self.max_in_flight, triton_http_port=self.triton.http_port, triton_grpc_port=self.triton.grpc_port,
            triton_metrics_port=self.triton.metrics_port, health_http_port=self._health.http_port,
            health_grpc_port=self._health.grpc_port,
        )

    def _wait_front_door(self, timeout_s: float = 10.0) -> None:
        """Until nginx has bound every port: it writes its pid file only then (a taken port: it retries for 2 s,
        then exits)."""
        deadline = time.monotonic() + timeout_s
        pid_file = self.run_dir / "nginx.pid"
        while time.monotonic() < deadline:
            if not self._door.alive():
                raise ServerStartError(
                    f"the front door (nginx) exited with {describe_exit(self._door.returncode)}: is port "
                    f"{self.options.http_port}, {self.options.grpc_port} or {self.options.metrics_port} on "
                    f"{self.options.host} taken?")
            if pid_file.is_file() and pid_file.read_text().strip() == str(self._door.pid):
                return
            time.sleep(0.05)
        raise ServerStartError(f"the front door did not open its ports within {timeout_s:.0f} s")

    def _restart_front_door(self, cause: str, stop: threading.Event) -> bool:
        self._event("front door", f"front door {cause}")
        go = self._before_restart("front door", cause, stop)
        if go is not True:
            return go is None
        self._door.stop()
        self._door.start()
        self._wait_front_door()
        return True

    # -- helpers ---------------------------------------------------------------------------------------------

    @property
    def _door(self) -> FrontDoor:
        if self.front is None:
            raise RuntimeError("the front door has not been started")
        return self.front

    @property
    def _health(self) -> HealthService:
        if self.health is None:
            raise RuntimeError("the health service has not been started")
        return self.health

    @property
    def _triton_pid(self) -> int:
        if self.triton.process is None:
            raise RuntimeError("tritonserver has not been started")
        return self.triton.process.pid

    def _before_restart(self, part: str, cause: str, stop: threading.Event) -> bool | None:
        """Count a restart of `part` and wait its backoff: True to go on, False once over the cap (given up),
        None when `stop` was set meanwhile."""
        attempt = self._restarts.record(part)
        if attempt is None:
            return self._give_up(f"{part} failed {self.options.max_restarts} times within "
                                 f"{self.options.restart_window_s:.0f} s")
        count, backoff = attempt
        log.warning("%s %s; restarting in %.1f s (restart %d of %d per %.0f s)", part, cause, backoff, count,
                    self.options.max_restarts, self.options.restart_window_s)
        return None if stop.wait(backoff) else True

    def _give_up(self, reason: str) -> bool:
        self.state.give_up(reason + "; giving up")
        self._event("supervisor", reason)
        log.error("%s; giving up", reason)
        return False

    def _event(self, part: str, what: str) -> None:
        self.events.append((time.time(), part, what))

    def _client_host(self) -> str:
        host = self.options.host
        if host in ("0.0.0.0", "", "localhost"):
            return "127.0.0.1"
        if host == "::":
            return "[::1]"
        return f"[{host}]" if ":" in host else host

    def _completed_counts(self) -> dict[str, int]:
        try:
            stats = self._get("/v2/models/stats")
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        return {m["name"]: int(m["inference_stats"]["success"]["count"]) for m in stats.get("model_stats", [])}

    def _get(self, path: str, timeout_s: float = 2.0):
        with urllib.request.urlopen(f"{self.triton.http_url}{path}", timeout=timeout_s) as response:
            return json.load(response)

    def _admin(self, method: str, path: str, body: dict):
        request = urllib.request.Request(
            f"{self.triton.http_url}{path}", data=json.dumps(body).encode(), method=method,
            headers={"Content-Type": "application/json", **self.triton.admin_headers},
        )
        with urllib.request.urlopen(request, timeout=self.options.start_timeout_s) as response:
            data = response.read()
        return json.loads(data) if data else None


@contextlib.contextmanager
def supervised(repository: Path, options: ServeOptions | None = None, *,
               cache_dir: Path = DEFAULT_CACHE_DIR):
    """A started `Supervisor` whose checks run in a thread until the block ends, then everything stops."""
    stack = Supervisor(repository, options, cache_dir=cache_dir)
    stop = threading.Event()
    stack.start(stop)
    watcher = threading.Thread(target=stack.run, args=(stop,), name="mmserve-supervisor", daemon=True)
    watcher.start()
    try:
        yield stack
    finally:
        stop.set()
        watcher.join(60)
        stack.stop()


def _probe_inputs(config: dict) -> list:
    """One item for each required input (or, when every input is optional, the first), shaped as the config says
    (variable dimensions: 8)."""
    dtypes = {"TYPE_UINT8": (np.uint8, "UINT8"), "TYPE_INT32": (np.int32, "INT32"), "TYPE_INT64": (np.int64, "INT64"),
              "TYPE_FP32": (np.float32, "FP32"), "TYPE_FP16": (np.float16, "FP16")}
    specs = [spec for spec in config.get("input", []) if not spec.get("optional")] or config.get("input", [])[:1]
    inputs = []
    for spec in specs:
        dims = [8 if int(d) < 0 else int(d) for d in spec.get("dims", [])]
        shape = [1, *dims] if int(config.get("max_batch_size", 0)) > 0 else dims
        if spec["data_type"] == "TYPE_STRING":
            item = _PROBE_PNG if spec["name"] == "image" else b"probe"
            array = np.full(shape, item, dtype=np.object_)
            inputs.append((spec["name"], array, "BYTES"))
        else:
            dtype, name = dtypes[spec["data_type"]]
            inputs.append((spec["name"], np.zeros(shape, dtype), name))
    return inputs


def model_processes(triton_pid: int) -> dict[str, list[int]]:
    """model name -> pids of tritonserver's Python-backend processes serving it (from their command lines)."""
    found: dict[str, list[int]] = {}
    for pid in _children(triton_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[0].endswith(b"triton_python_backend_stub") and process_end(pid) is None:
            model = Path(os.fsdecode(argv[1])).parent.parent.name  # REPOSITORY/MODEL/VERSION/model.py
            found.setdefault(model, []).append(pid)
    return found


def _children(pid: int) -> list[int]:
    children: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            children += [int(c) for c in text.split()]
    except OSError:
        pass
    return children


def process_end(pid: int) -> str | None:
    """None while `pid` runs; else how it ended ("was killed by signal 9 (SIGKILL)", "exited with status 1")."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "is gone"
    if fields[0] not in ("Z", "X"):
        return None
    status = int(fields[49]) if len(fields) > 49 else 0  # exit_code, as waitpid() would report it
    if os.WIFSIGNALED(status):
        return f"was killed by {describe_exit(-os.WTERMSIG(status))}"
    return f"exited with {describe_exit(os.WEXITSTATUS(status))}"
