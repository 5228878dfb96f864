"""`kill -9` of `serve` between a change's commit and its webhook's delivery: the event is delivered after the restart,
with the same event id (issue 17)."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pytest

from tests.api.conftest import body_from_dataset
from tests.conftest import TrainedWorld
from tests.feedback.test_delivery import Receiver, until, verify
from tests.serving import CLI, free_port, post, serve_env, stop_all, wait_ready

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def test_a_webhook_survives_kill_9_of_the_server(serving_home: Path, trained_world: TrainedWorld,
                                                 tmp_path: Path) -> None:
    env = {**serve_env(serving_home, tmp_path), "FRAUD_WEBHOOK_ALLOW_PRIVATE": "true",
           "FRAUD_WEBHOOK_TIMEOUT_S": "1"}  # a lease of 8 s: what a killed sender leaves behind
    subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, capture_output=True)
    key = subprocess.run([*CLI, "keys", "create", "--role", "admin", "--name", "chaos"], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    receiver = Receiver()
    receiver.mode = "hang"
    handles, servers = [], []

    def start(log: Path) -> subprocess.Popen[bytes]:
        handles.append(log.open("wb"))
        servers.append(subprocess.Popen([*CLI, "serve", "--port", str(port), "--workers", "1", "--threads", "2",
                                         "--analyst-port", "0"], env=env, stdout=handles[-1],
                                        stderr=subprocess.STDOUT, start_new_session=True))
        wait_ready(servers[-1], log, 1)
        return servers[-1]

    try:
        first = start(tmp_path / "first.log")
        code, hook = post(f"{base}/v1/webhooks", {"url": receiver.url, "events": ["case.closed"]}, key)
        assert code == 201, hook
        returns = pd.read_parquet(trained_world.dataset / "returns.parquet")
        body = body_from_dataset(trained_world.dataset, str(returns["return_id"].iloc[0]),
                                 return_id=f"chaos-{uuid.uuid4().hex[:8]}")
        code, _ = post(f"{base}/v1/lists", {"entity": "customer", "value": body["customer_id"], "list": "block",
                                            "reason": "chaos test"}, key)
        assert code == 201
        code, assessed = post(f"{base}/v1/returns/assess", body, key)
        assert code == 201 and assessed["decision"] == "deny" and assessed["case_id"], assessed
        code, closed = post(f"{base}/v1/cases/{assessed['case_id']}/close", {"label": "fraud", "reason": "chaos"},
                            key)
        assert code == 200, closed  # committed: the event is in the outbox
        until(lambda: receiver.got, 10)  # and in flight to a receiver that does not answer
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        receiver.mode = "ok"
        receiver.release.set()
        start(tmp_path / "second.log")
        until(lambda: get_deliveries(base, hook["id"], key)[1]["deliveries"][0]["status"] == "delivered", 30)
        ids = [verify(hook["secret"], h, b)["id"] for h, b in receiver.got]
        assert len(ids) >= 2 and len(set(ids)) == 1  # the same event again, and no other
        assert get_deliveries(base, hook["id"], key)[1]["deliveries"][0]["event_id"] == ids[0]
    finally:
        stop_all(servers, handles)
        receiver.close()


def get_deliveries(base: str, hook_id: str, key: str) -> tuple[int, dict[str, list[dict[str, object]]]]:
    import json
    import urllib.request

    request = urllib.request.Request(f"{base}/v1/webhooks/{hook_id}/deliveries",
                                     headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status, json.loads(answer.read())
