"""Many replicas behind one client: least-outstanding balancing, ejection and health-checked re-admission, and a
retry on another replica; the bookkeeping alone, then two real served stacks (one killed under load)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import mmserve
from mmserve.client import ClientOptions
from mmserve.client.replicas import MAX_EJECTION_S, ReplicaSet


def replica_set(count: int = 3, **options) -> ReplicaSet:
    urls = ",".join(f"grpc://127.0.0.1:{9000 + i}" for i in range(count))
    return ReplicaSet(ClientOptions(url=urls, **options))


def test_urls_are_a_list_or_comma_separated():
    assert ClientOptions(url=["grpc://a:1", "http://b:2"]).urls == ("grpc://a:1", "http://b:2")
    assert ClientOptions(url="grpc://a:1, grpc://b:2").urls == ("grpc://a:1", "grpc://b:2")
    with pytest.raises(ValueError, match="server URL"):
        ClientOptions(url="grpc://a:1,ftp://b/c/d")


def test_least_outstanding_then_least_recently_used():
    replicas = replica_set(3)
    first, second, third = (replicas.acquire() for _ in range(3))
    assert len({first.url, second.url, third.url}) == 3  # one each while all are busy alike
    replicas.release(second)
    assert replicas.acquire() is second  # the only one with nothing in flight
    replicas.release(first)
    replicas.release(third)
    assert replicas.acquire() is first  # a tie: the least recently used
    assert replicas.acquire(avoid=[third]) is not third


def test_ejection_doubles_and_health_checks_readmit():
    replicas = replica_set(2, eject_s=0.2)
    bad, good = replicas.replicas
    replicas.eject(bad)
    assert all(replicas.acquire() is good for _ in range(5))
    assert replicas.has_alternative(good) is False and replicas.has_alternative(bad) is True
    replicas.eject(bad)
    assert 0.3 < bad.ejected_until - time.monotonic() <= 0.4  # 0.2 s, then 0.4 s
    replicas.checked(bad, ready=True)
    assert not bad.ejected(time.monotonic()) and bad.failures == 0
    replicas.checked(good, ready=False)  # a ready replica that stops answering is ejected before a request finds out
    assert good.ejected(time.monotonic())
    for _ in range(20):
        replicas.eject(good)
    assert good.ejected_until - time.monotonic() <= MAX_EJECTION_S


def test_when_all_are_ejected_the_soonest_back_is_tried():
    replicas = replica_set(2, eject_s=5)
    a, b = replicas.replicas
    replicas.eject(a)
    replicas.eject(b)
    replicas.eject(b)
    assert replicas.acquire() is a


@pytest.fixture(scope="module")
def two_stacks(triton_repository, bundled_settings, tmp_path_factory, stack_factory):
    with stack_factory(triton_repository, bundled_settings.cache_dir, tmp_path_factory.mktemp("replica-a"),
                       backoff_s=0.2) as a, \
            stack_factory(triton_repository, bundled_settings.cache_dir, tmp_path_factory.mktemp("replica-b"),
                          backoff_s=0.2) as b:
        yield a, b


def text_requests(url: str) -> int:
    with mmserve.Client(url) as client:
        stats = client.statistics("embed_text")["model_stats"][0]
    return int(stats.get("inference_stats", {}).get("success", {}).get("count", 0))


def test_healthy_replicas_share_the_load(two_stacks):
    """Both replicas answer alike, so least-outstanding sends them alike. (They share this machine's two cores:
    with many more requests in flight the busier one also wins more CPU time from the other, so the balance
    measured here says more about the scheduler than the client; 4 in flight keeps it about the client.)"""
    a, b = two_stacks
    before = [text_requests(a.grpc_url), text_requests(b.grpc_url)]
    with mmserve.Client([a.grpc_url, b.grpc_url], batch_size=1, max_in_flight=4) as client:
        for _ in range(10):
            client.embed_texts([f"a red circle number {i}" for i in range(60)])
        sent = client.replica_status()
    shares = [text_requests(a.grpc_url) - before[0], text_requests(b.grpc_url) - before[1]]
    assert sum(shares) == 600, shares
    assert abs(shares[0] - shares[1]) <= 0.2 * max(shares), (shares, sent)


def test_a_replica_killed_under_load_fails_no_call(two_stacks, gallery):
    """SIGKILL one replica's tritonserver while four threads embed through both: every call succeeds (retried on
    the other replica), and once its supervisor has it back, health checks re-admit it."""
    a, b = two_stacks
    urls = [a.grpc_url, b.grpc_url]
    images = [path.read_bytes() for path in gallery[:2]]
    outcomes: list[Exception | None] = []
    stop = threading.Event()

    def work(kind: str) -> None:
        with mmserve.Client(urls, health_interval_s=0.2, eject_s=0.5) as client:
            while not stop.is_set():
                try:
                    if kind == "image":
                        client.embed_images(images)
                    else:
                        client.embed_texts(["a red circle", "a blue square"])
                    outcomes.append(None)
                except Exception as failure:  # noqa: BLE001 - every outcome is inspected
                    outcomes.append(failure)

    threads = [threading.Thread(target=work, args=("image" if i % 2 else "text",), daemon=True) for i in range(4)]
    with mmserve.Client(urls, health_interval_s=0.2, eject_s=0.5) as watcher:
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        killed = a.triton.process.pid
        os.kill(killed, signal.SIGKILL)
        time.sleep(3.0)
        assert watcher.replica_status()[a.grpc_url]["ejected"] or a.triton.process.pid != killed
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (a.triton.process.pid != killed and watcher.health().replicas.get(
                a.grpc_url)):
            time.sleep(0.5)
        assert watcher.health().replicas == {a.grpc_url: True, b.grpc_url: True}, "replica A did not come back"
        back = text_requests(a.grpc_url)
        time.sleep(3.0)  # re-admitted by the load threads' own health checks: A takes traffic again
        stop.set()
        for thread in threads:
            thread.join(60)
    failures = [repr(outcome) for outcome in outcomes if outcome is not None]
    assert not failures and len(outcomes) > 20, failures[:3]
    assert text_requests(a.grpc_url) > back


def test_an_unreachable_replica_is_left_out(two_stacks, port_factory):
    a, _ = two_stacks
    dead = f"grpc://127.0.0.1:{port_factory()}"
    with mmserve.Client([dead, a.grpc_url], timeout_s=5) as client:
        for _ in range(5):
            assert client.embed_texts(["a green triangle"]).shape[0] == 1
        status = client.replica_status()
        health = client.health()
    assert status[dead]["ejected"] and status[a.grpc_url]["sent"] >= 5
    assert health.ready and health.replicas == {dead: False, a.grpc_url: True}
