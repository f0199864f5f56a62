"""Security: operator endpoints, the documented privacy model, secrets in logs and bodies,
CORS, and timeouts on every outbound RPC call.

The secret scan runs the real service from an encrypted keystore with the root logger at
DEBUG (ours, uvicorn's, web3's, SQLAlchemy's lines all land in the captured log), drives a
full flow including every kind of error, and then searches the log and every response body
and header for the payee's private key, the keystore password and the operator token.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from piecework_testnode import ANVIL_KEYS, Accounts, Deployment, Node
from reliability_harness import (
    AUTH,
    TOKEN,
    PayClient,
    Service,
    domain_of,
    hx,
    record,
    service_env,
)

from channel.chain import ChainClient
from channel.errors import NodeUnavailable
from channel.messages import Access, CloseRequest, format_access, task_id_hash

pytestmark = pytest.mark.integration

MakeClient = Callable[..., ChainClient]
PASSWORD = "correct horse battery staple 42!"


@pytest.fixture
def served(  # noqa: PLR0917 - fixtures
    anvil_node: Node, deployment: Deployment, accounts: Accounts, make_client: MakeClient,
    make_service: Callable[..., Service], tmp_path: Path,
) -> Iterator[tuple[Service, bytes, PayClient]]:
    keystore = tmp_path / "payee.json"
    keystore.write_text(json.dumps(Account.encrypt(accounts.payee.key, PASSWORD, kdf="pbkdf2",
                                                   iterations=2)))
    env = service_env(anvil_node.url, deployment.channels,
                      f"sqlite:///{tmp_path / 'sec.db'}",
                      PIECEWORK_KEYSTORE=str(keystore), PIECEWORK_KEYSTORE_PASSWORD=PASSWORD)
    del env["PIECEWORK_PRIVATE_KEY"]
    service = make_service(env, debug_logging=True)
    service.start()
    cid = make_client(accounts.payer).open(accounts.payee.address, 10**15,
                                           challenge_period=3600, salt=os.urandom(32))[0]
    client = PayClient(service.url, domain_of(deployment), accounts.payer.key.hex(),
                       accounts.payee.address)
    yield service, cid, client
    client.close()


def test_operator_endpoints_refuse_missing_and_wrong_tokens(
    served: tuple[Service, bytes, PayClient],
) -> None:
    service, cid, client = served
    assert client.pay(cid, "t1", 10, 10).status_code == 201
    task = {"task_id": "t-auth", "amount": "1", "description": "d"}
    endpoints = [("GET", "/v1/channels", None), ("GET", "/metrics", None),
                 ("POST", f"/v1/channels/{hx(cid)}/claim", None),
                 ("POST", f"/v1/channels/{hx(cid)}/tasks", task)]
    # No bearer token at all (401) ...
    missing = [{}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN},
               {"Authorization": "Bearer"}, {"X-Operator-Token": TOKEN}]
    # ... or a wrong one (403).
    wrong = [{"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"},
             {"Authorization": f"Bearer {TOKEN[:-1]}"},
             {"Authorization": f"Bearer {TOKEN.upper()}"}]
    tried = 0
    with httpx.Client(base_url=service.url, timeout=10) as http:
        for method, path, body in endpoints:
            for headers, status, code in [*((h, 401, "unauthorized") for h in missing),
                                          *((h, 403, "forbidden") for h in wrong)]:
                r = http.request(method, path, headers=headers, json=body)
                tried += 1
                assert r.status_code == status, (method, path, headers, r.status_code)
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["code"] == code
                if status == 401:
                    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
            assert http.request(method, path, headers=AUTH, json=body).status_code in (
                200, 201, 409)
        # The payer side's reads take Access or the operator token; a *wrong* token is never
        # silently ignored.
        r = http.get(f"/v1/channels/{hx(cid)}/receipts", headers={"Authorization": "Bearer x"})
        assert (r.status_code, r.json()["code"]) == (403, "access_denied")
    record("security/operator-auth", endpoints=len(endpoints),
           bad_headers=len(missing) + len(wrong), requests_refused=tried + 1)


def test_privacy_model_of_listing_endpoints(
    served: tuple[Service, bytes, PayClient], accounts: Accounts, make_client: MakeClient,
) -> None:
    """api/__init__.py: receipts and tasks are private to the payer side (Access) and the
    operator; task id strings appear only in the task list; the channel list is
    operator-only; other payees' channels 404."""
    service, cid, client = served
    secret_task = "client-acme/confidential-logo-redesign"
    with httpx.Client(base_url=service.url, timeout=10) as http:
        asked = http.post(f"/v1/channels/{hx(cid)}/tasks", headers=AUTH, json={
            "task_id": secret_task, "amount": "10", "description": "confidential"})
        assert asked.status_code == 201, asked.text
        assert client.pay(cid, secret_task, 10, 10).status_code == 201
        for path in ("receipts", "tasks"):
            anonymous = http.get(f"/v1/channels/{hx(cid)}/{path}")
            assert (anonymous.status_code, anonymous.json()["code"]) == (401, "access_required")
            assert secret_task not in anonymous.text
        expires = int(time.time()) + 60
        signature = client.signer.sign(client.domain, Access(cid, expires))
        access = {"Authorization": f"Access {format_access(expires, signature)}"}
        receipts = http.get(f"/v1/channels/{hx(cid)}/receipts", headers=access).json()
        (receipt,) = receipts["receipts"]
        assert receipt["task_id"] == hx(task_id_hash(secret_task))  # the hash, as signed
        tasks = http.get(f"/v1/channels/{hx(cid)}/tasks", headers=access).json()["tasks"]
        assert [t["task_id"] for t in tasks] == [secret_task]
        operator = http.get(f"/v1/channels/{hx(cid)}/tasks", headers=AUTH).json()["tasks"]
        assert operator == tasks
        view = http.get(f"/v1/channels/{hx(cid)}").json()
        assert secret_task not in json.dumps(view)
        # A channel paying someone else is not this service's business: 404, no details.
        foreign = make_client(accounts.payer).open(accounts.third.address, 1000,
                                                   challenge_period=3600,
                                                   salt=os.urandom(32))[0]
        for path in (f"/v1/channels/{hx(foreign)}", f"/v1/channels/{hx(foreign)}/receipts"):
            r = http.get(path, headers=AUTH)
            assert r.status_code == 404 and r.json()["code"] == "unknown_channel", path
        listed = http.get("/v1/channels", headers=AUTH).json()["items"]
        assert {i["channel_id"] for i in listed} == {hx(cid)}
    record("security/privacy", receipts_and_tasks="payer side + operator only",
           foreign_channel="404")


def test_no_secret_in_logs_or_responses(
    served: tuple[Service, bytes, PayClient], accounts: Accounts,
) -> None:
    service, cid, client = served
    captured: list[str] = []
    with httpx.Client(base_url=service.url, timeout=15) as http:
        def keep(r: httpx.Response) -> httpx.Response:
            captured.append(f"{r.status_code} {dict(r.headers)} {r.text}")
            return r

        keep(client.pay(cid, "ok-1", 10, 10))
        keep(client.pay(cid, "ok-1", 10, 10))  # idempotent replay
        keep(client.pay(cid, "stale", 10, 10))  # 409
        keep(client.pay(cid, "too-much", 10**18, 10**18 + 10))  # 422 exceeds deposit
        body = client.body(cid, "bad-sig", 5, 15)
        body["signature"] = "0x" + "11" * 65
        keep(http.post(f"/v1/channels/{hx(cid)}/payments", json=body))
        keep(http.post(f"/v1/channels/{hx(bytes(32))}/payments", json=body))
        keep(http.post(f"/v1/channels/{hx(cid)}/payments", content=b"x" * 20000,
                       headers={"content-type": "application/json"}))
        keep(http.post(f"/v1/channels/{hx(cid)}/payments", content=b"{",
                       headers={"content-type": "text/plain"}))
        keep(http.get("/v1/channels", headers={"Authorization": "Bearer nope"}))
        keep(http.get("/v1/channels", headers=AUTH))
        keep(http.get("/metrics", headers=AUTH))
        keep(http.get(f"/v1/channels/{hx(cid)}/receipts", headers=AUTH))
        keep(http.get("/v1/info"))
        keep(http.get("/healthz"))
        keep(http.post(f"/v1/channels/{hx(cid)}/claim", headers=AUTH))  # a real transaction
        keep(http.post(f"/v1/channels/{hx(cid)}/close", json={
            "cumulative_amount": "10",
            "signature": hx(client.signer.sign(client.domain, CloseRequest(cid, 10)))}))
        keep(http.get("/openapi.json"))
    time.sleep(0.5)
    service.stop()  # flush and end: the log is complete
    log = service.log_path.read_text(errors="replace")
    assert "DEBUG" in log  # the scan really ran over debug-level output
    payee_key = bytes(accounts.payee.key).hex()
    secrets = {"payee private key": payee_key, "keystore password": PASSWORD,
               "operator token": TOKEN, "payer private key": ANVIL_KEYS[1][2:]}
    haystacks = {"service log": log, "responses": "\n".join(captured)}
    leaks = [f"{name} in {where}" for name, secret in secrets.items()
             for where, text in haystacks.items()
             if re.search(re.escape(secret), text, re.IGNORECASE)]
    assert not leaks, leaks
    record("security/secret-scan", log_bytes=len(log), responses=len(captured),
           secrets_checked=len(secrets), leaks=0)


def test_no_cors_headers_by_default(served: tuple[Service, bytes, PayClient]) -> None:
    service, cid, _ = served
    origin = {"Origin": "https://evil.example"}
    with httpx.Client(base_url=service.url, timeout=10) as http:
        responses = [
            http.options(f"/v1/channels/{hx(cid)}/payments",
                         headers={**origin, "Access-Control-Request-Method": "POST",
                                  "Access-Control-Request-Headers": "content-type"}),
            http.get("/v1/info", headers=origin),
            http.get(f"/v1/channels/{hx(cid)}", headers=origin),
        ]
    for r in responses:
        assert not [h for h in r.headers if h.lower().startswith("access-control-")], r.headers
    record("security/cors", requests=len(responses), cors_headers=0)


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a hung node)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_every_rpc_call_has_a_timeout(black_hole: str, deployment: Deployment) -> None:
    # 1. Static: the only place that builds an HTTPProvider passes a timeout, and the api and
    #    CLI build their clients through it.
    root = Path(__file__).resolve().parents[2]
    sources = {p: p.read_text() for d in ("channel", "api") for p in (root / d).rglob("*.py")}
    providers = [(p, line) for p, text in sources.items() for line in text.splitlines()
                 if "HTTPProvider(" in line and "import" not in line
                 and not line.lstrip().startswith("class ")]  # a subclass builds nothing
    assert providers and all('"timeout"' in line for _, line in providers), providers
    assert not [p for p, text in sources.items() if "Web3(" in text
                and p.name != "chain.py"], "a Web3 built outside channel.chain.connect"
    client = ChainClient.from_url(black_hole, deployment.channels, rpc_timeout=1.0)
    assert client.w3.provider._request_kwargs["timeout"] == 1.0  # type: ignore[attr-defined]
    default = ChainClient.from_url(black_hole, deployment.channels)
    assert 0 < default.w3.provider._request_kwargs["timeout"] <= 30  # type: ignore[attr-defined]
    assert default.w3.provider.exception_retry_configuration.retries <= 1  # type: ignore[attr-defined]
    # 2. Behaviour: a node that accepts and never answers is NodeUnavailable within ~timeout.
    started = time.monotonic()
    with pytest.raises(NodeUnavailable):
        client.get_channel(bytes(32))
    elapsed = time.monotonic() - started
    assert elapsed < 2 * 1.0 + 1.0, elapsed  # one retry at most, not web3's default five
    record("security/rpc-timeout", providers=len(providers), hung_node_s=round(elapsed, 2))
