"""API keys and TLS at the front door, with real clients: the SDK, tritonclient, grpc, curl, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mmserve

KEYS = ("k1-" + "a" * 29, "k2-" + "b" * 29)


def http_status(url: str, *, key: str | None = None, body: bytes | None = None, context=None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def text_body(text: str = "a red circle") -> bytes:
    return json.dumps({"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}).encode()


@pytest.fixture(scope="module")
def keyed(triton_repository, bundled_settings, tmp_path_factory, stack_factory):
    with stack_factory(triton_repository, bundled_settings.cache_dir, tmp_path_factory.mktemp("keyed"),
                       api_keys=KEYS) as stack:
        yield stack


def test_http_needs_a_key_for_inference_metadata_and_statistics_but_not_health(keyed):
    base = keyed.http_url
    guarded = [(f"{base}/v2/models/embed_text/infer", text_body()), (f"{base}/v2/models/embed_text/config", None),
               (f"{base}/v2/models/stats", None), (f"{base}/v2", None), (f"{base}/v2/models/embed_text", None)]
    for url, body in guarded:
        assert http_status(url, body=body) == 401, url
        assert http_status(url, body=body, key="wrong-" + "c" * 20) == 401, url
        for key in KEYS:
            assert http_status(url, body=body, key=key) == 200, url
    for url in (f"{base}/v2/health/live", f"{base}/v2/health/ready", f"{base}/v2/models/embed_image/ready"):
        assert http_status(url) == 200, url
    answer = urllib.request.Request(f"{base}/v2/models/stats")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(answer, timeout=10)
    assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert "API key" in json.loads(refused.value.read())["error"]


def test_grpc_needs_a_key_in_the_metadata_but_not_for_health(keyed):
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    client = tc.InferenceServerClient(keyed.grpc_url.removeprefix("grpc://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("embed_text")
        calls = [lambda h: client.get_model_config("embed_text", headers=h),
                 lambda h: client.get_inference_statistics(headers=h),
                 lambda h: client.get_server_metadata(headers=h)]
        for call in calls:
            for headers in (None, {"authorization": "Bearer wrong-" + "c" * 20}, {"authorization": KEYS[0]}):
                with pytest.raises(InferenceServerException) as refused:
                    call(headers)
                assert "UNAUTHENTICATED" in str(refused.value.status()), refused.value
            assert call({"authorization": f"Bearer {KEYS[1]}"})
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_sdk_sends_its_key_and_a_missing_one_is_an_authentication_error(keyed, protocol, monkeypatch):
    url = keyed.grpc_url if protocol == "grpc" else keyed.http_url
    monkeypatch.delenv("MMSERVE_API_KEY", raising=False)
    with mmserve.Client(url, retries=0) as anonymous:
        with pytest.raises(mmserve.AuthenticationError):
            anonymous.embed_texts(["a red circle"])
    with mmserve.Client(url, api_key=KEYS[0]) as client:
        assert client.embed_texts(["a red circle"]).shape[0] == 1
        assert client.health().ready
    monkeypatch.setenv("MMSERVE_API_KEY", KEYS[1])
    with mmserve.Client(url) as from_environment:
        assert from_environment.embed_texts(["a red circle"]).shape[0] == 1

    async def asynchronous():
        async with mmserve.AsyncClient(url) as client:
            return await client.embed_texts(["a red circle"])

    assert asyncio.run(asynchronous()).shape[0] == 1


def test_bad_keys_do_not_disturb_good_clients(keyed):
    """A storm of requests with wrong keys alongside real ones: every real one is answered."""
    def bad(_):
        return http_status(f"{keyed.http_url}/v2/models/embed_text/infer", body=text_body(), key="x" * 20)

    with ThreadPoolExecutor(8) as pool, mmserve.Client(keyed.grpc_url, api_key=KEYS[0], retries=0) as client:
        refused = pool.map(bad, range(300))
        good = [pool.submit(client.embed_texts, [f"a red circle {i}"]) for i in range(40)]
        assert set(refused) == {401}
        assert all(job.result().shape[0] == 1 for job in good)


def test_cli_and_load_generator_send_the_key(keyed, tmp_path):
    base = [sys.executable, "-m", "mmserve.cli", "bench", "--server", keyed.grpc_url, "--workload", "text",
            "--concurrency", "2", "--seconds", "1", "--json", str(tmp_path / "bench.json")]
    env = {k: v for k, v in os.environ.items() if k != "MMSERVE_API_KEY"}
    refused = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 1 and "API key" in refused.stderr, refused.stderr
    served = subprocess.run([*base, "--api-key", KEYS[0]], capture_output=True, text=True, timeout=120, env=env)
    assert served.returncode == 0, served.stderr
    (step,) = json.loads((tmp_path / "bench.json").read_text())
    assert step["errors"] == 0 and step["completed"] > 0
    from_env = subprocess.run(base, capture_output=True, text=True, timeout=120,
                              env=dict(env, MMSERVE_API_KEY=KEYS[1]))
    assert from_env.returncode == 0, from_env.stderr


# -- TLS -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, made with openssl."""
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=mmserve test CA")
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                            ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(extension + "\n")
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=mmserve test {name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    # A second CA that signed nothing here: verifying against it must fail.
    openssl("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.pem", "-days", "2", "-subj", "/CN=other")
    return d


@pytest.fixture(scope="module")
def secured(triton_repository, bundled_settings, tmp_path_factory, certificates, stack_factory):
    with stack_factory(triton_repository, bundled_settings.cache_dir, tmp_path_factory.mktemp("tls-log"),
                       api_keys=KEYS[:1], tls_cert=certificates / "server.pem", tls_key=certificates / "server.key",
                       tls_client_ca=certificates / "ca.pem") as stack:
        yield stack


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_mutual_tls_serves_clients_with_a_certificate(secured, certificates, local_embedder, protocol):
    url = secured.grpc_url if protocol == "grpc" else secured.http_url
    assert url.startswith(("grpcs://", "https://"))
    with mmserve.Client(url, api_key=KEYS[0], ca_cert=certificates / "ca.pem",
                        client_cert=certificates / "client.pem", client_key=certificates / "client.key") as client:
        served = client.embed_texts(["a red circle"])
        assert client.health().ready
    assert float(served[0] @ local_embedder.embed_texts(["a red circle"])[0]) >= 0.9999


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_sdk_verifies_the_server_certificate_by_default(secured, certificates, protocol):
    url = secured.grpc_url if protocol == "grpc" else secured.http_url
    client_files = {"client_cert": certificates / "client.pem", "client_key": certificates / "client.key"}
    for ca in (None, certificates / "other.pem"):  # the system's trust store, then an unrelated CA
        with mmserve.Client(url, api_key=KEYS[0], ca_cert=ca, retries=0, timeout_s=10, **client_files) as client:
            with pytest.raises(mmserve.ServerUnavailableError):
                client.embed_texts(["a red circle"])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_mutual_tls_refuses_a_client_without_a_certificate(secured, certificates, protocol):
    url = secured.grpc_url if protocol == "grpc" else secured.http_url
    with mmserve.Client(url, api_key=KEYS[0], ca_cert=certificates / "ca.pem", retries=0) as client:
        with pytest.raises(mmserve.AuthenticationError):
            client.embed_texts(["a red circle"])


def test_health_needs_no_client_certificate_and_plain_http_is_refused(secured, certificates):
    import ssl

    context = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    assert http_status(f"{secured.http_url}/v2/health/ready", context=context) == 200
    assert http_status(f"{secured.http_url}/v2/models/embed_text/config", key=KEYS[0], context=context) == 403
    plain = secured.http_url.replace("https://", "http://")
    assert http_status(f"{plain}/v2/health/ready") == 400  # nginx: plain HTTP sent to an HTTPS port
    answer = subprocess.run(["curl", "-s", "--cacert", str(certificates / "ca.pem"), "--cert",
                             str(certificates / "client.pem"), "--key", str(certificates / "client.key"), "-H",
                             f"Authorization: Bearer {KEYS[0]}", f"{secured.http_url}/v2/models/embed_text/infer",
                             "-d", text_body().decode()], capture_output=True, text=True, timeout=30)
    output = json.loads(answer.stdout)["outputs"][0]
    assert np.isclose(np.linalg.norm(output["data"]), 1.0, atol=1e-4)


def test_cli_speaks_mutual_tls(secured, certificates, tmp_path):
    command = [sys.executable, "-m", "mmserve.cli", "bench", "--server", secured.grpc_url, "--workload", "text",
               "--concurrency", "1", "--seconds", "1", "--api-key", KEYS[0], "--ca-cert",
               str(certificates / "ca.pem"), "--client-cert", str(certificates / "client.pem"), "--client-key",
               str(certificates / "client.key"), "--json", str(tmp_path / "bench.json")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (step,) = json.loads((tmp_path / "bench.json").read_text())
    assert step["errors"] == 0 and step["completed"] > 0


def test_front_door_configuration_checks(tmp_path):
    from mmserve.serving.frontdoor import FrontDoorConfig, decimal_at_most
    from mmserve.config import ServeOptions

    for limit in (9, 10, 99, 100, 1024, 1048576, 987654):
        pattern = re.compile(f"^{decimal_at_most(limit)}$")
        for value in list(range(0, 2000)) + [limit - 1, limit, limit + 1, limit * 10, 10**7]:
            assert bool(pattern.match(str(value))) == (value <= limit), (limit, value)

    def render(**options):
        return FrontDoorConfig(ServeOptions(**options), 96, 1, 2, 3, 4, 5).render(tmp_path)

    plain = render()
    assert "ssl_certificate" not in plain and '"Bearer ' not in plain
    assert "default 1;" in plain.split("$mmserve_api_key_ok", 1)[1].split("}", 1)[0]  # no keys: open
    keyed = render(api_keys=KEYS)
    assert all(f'"Bearer {key}" 1;' in keyed for key in KEYS)
    assert "default 0;" in keyed.split("$mmserve_api_key_ok", 1)[1].split("}", 1)[0]
    with pytest.raises(ValueError, match="at least 16 characters"):
        render(api_keys=("short",))
    with pytest.raises(ValueError, match="letters, digits"):
        render(api_keys=('quote"injection-attempt-x',))
    with pytest.raises(ValueError, match="both a certificate"):
        render(tls_cert=tmp_path / "cert.pem")
    with pytest.raises(ValueError, match="needs a server certificate"):
        render(tls_client_ca=tmp_path / "ca.pem")
