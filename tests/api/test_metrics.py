"""GET /metrics in one process: the payment counters, the unclaimed gauge, process metrics.

Counters are process-wide (module-level prometheus_client objects), so every figure here is
the difference between two scrapes. Several workers: tests/api/test_metrics_workers.py.
"""

from __future__ import annotations

import pytest
from api_support import AUTH, ETH, Twin
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(twin: Twin) -> tuple[Samples, set[str]]:
    """Every sample by (name, sorted labels), and the family names."""
    response = twin.client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    families = set()
    for family in text_string_to_metric_families(response.text):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, families


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_payments_counted_by_outcome_and_unclaimed_read_from_the_store(twin: Twin) -> None:
    before, _ = scrape(twin)
    cid = twin.open()
    assert twin.pay(cid, "t1", 5, 5).status_code == 201
    assert twin.pay(cid, "t2", 5, 5).status_code == 409  # stale
    assert twin.pay(cid, "t3", 5, 10).status_code == 201
    assert twin.pay(cid, "t4", 10**30, 10**30 + 10).status_code == 422  # exceeds the deposit
    after, _ = scrape(twin)

    assert delta(after, before, "piecework_payments_accepted_total") == 2
    assert delta(after, before, "piecework_payments_rejected_total", code="stale_voucher") == 1
    assert delta(after, before, "piecework_payments_rejected_total", code="exceeds_deposit") == 1
    assert delta(after, before, "piecework_payment_seconds_count") == 4
    assert delta(after, before, "piecework_payment_seconds_bucket", le="+Inf") == 4
    assert delta(after, before, "piecework_payment_seconds_sum") > 0
    # A gauge of this twin's own database, not a process-wide counter.
    assert after[("piecework_unclaimed_amount", (("token", ETH),))] == 10


def test_one_process_exposes_process_python_and_gc_metrics(twin: Twin) -> None:
    samples, families = scrape(twin)
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds",
            "python_info", "python_gc_collections"} <= families
    assert samples[("process_resident_memory_bytes", ())] > 0
    # No *_created series: single- and multi-worker scrapes carry the same names.
    assert not [name for name, _ in samples if name.endswith("_created")]


@pytest.mark.parametrize(("header", "status"),
                         [({}, 401), ({"Authorization": "Bearer wrong"}, 403)])
def test_metrics_need_the_operator_token(twin: Twin, header: dict[str, str], status: int) -> None:
    # v2: no credentials is 401, credentials that are not the operator's are 403.
    assert twin.client.get("/metrics", headers=header).status_code == status
