"""What idempotent publishing costs the fan-out: `.venv/bin/python -m bench.idempotency [KEYS] [--kafka N]`.

- memory per million keys: the growth of the process's resident memory (VmRSS) while one partition's
  `KeyStore` fills with KEYS keys (1,000,000 by default), and what tracemalloc counts for it;
- CPU per keyed event, as the fan-out spends it (`dispatcher/worker.py` `_judge_key`): the changelog key,
  its digest, the verdict, and for a new key recording it and its changelog record's JSON. Timed for a
  new key into a store below its bound, into a full store (every 64th evicts a batch), and for a
  duplicate; an event without the header costs one `message.headers()` call, not timed;
- restore: parsing and storing changelog records, per million; with `--kafka N`, N real records written
  to a one-partition topic on the local broker (HOOKFLEET bench prefix, deleted after) and read back
  through `hookfleet/stream/changelog.py` `read_partition`, as a newly assigned partition is;
- with `--fanout N`: a real dispatcher running the fan-out stage alone (local broker and database, one
  subscribed webhook per account, never delivered to), its process CPU per event for N events without a
  key and N with a key each, alternated twice: what a keyed event costs the fan-out end to end, including
  its changelog record.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from bench.harness import event_for
from bench.machine import describe, save_report
from bench.stack import PARTITIONS, BenchStack, cpu_seconds
from demo.tls import make_demo_certs
from dispatcher.idempotency import KeyStore, Verdict, digest
from hookfleet.kafka import (
    Consumer,
    KafkaProducer,
    TopicPartition,
    TopicSpec,
    client_config,
    delete_topics,
    ensure_topics,
)
from hookfleet.settings import LOCAL_DATABASE_URL, LOCAL_KAFKA, CommonSettings
from hookfleet.stream.changelog import read_partition
from producer.publisher import EventPublisher
from schemas.catalog import PRODUCT_TYPES
from schemas.idempotency import FirstSight, changelog_key

DAY_MS = 24 * 3600 * 1000


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _keys(n: int) -> list[tuple[str, str]]:
    """(account, key) pairs shaped like real ones: 1,000 accounts, a UUID-based order key each."""
    return [(f"acct_{i % 1000:04d}", f"order-{uuid.uuid4()}") for i in range(n)]


def memory(n: int) -> dict[str, float]:
    pairs = _keys(n)
    digests = [digest(changelog_key(a, k)) for a, k in pairs]
    del pairs
    gc.collect()
    now = int(time.time() * 1000)
    before = _rss_bytes()
    tracemalloc.start()
    store = KeyStore(DAY_MS, n)
    for offset, hashed in enumerate(digests):
        store.record(hashed, 1_000_000_000 + offset, now + offset // 100)
    traced, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grown = _rss_bytes() - before
    # The digests themselves were made before `before`; the store holds those same objects, so count them.
    digest_bytes = sum(d.__sizeof__() for d in digests[:1000]) / 1000 * n
    assert len(store) == n
    return {
        "keys": n,
        "rss_mb_per_million_keys": round((grown + digest_bytes) / n * 1e6 / 2**20, 1),
        "traced_mb_per_million_keys": round((traced + digest_bytes) / n * 1e6 / 2**20, 1),
        "bytes_per_key": round((grown + digest_bytes) / n),
    }


def _time_per_event(n: int, max_keys: int, duplicate: bool) -> float:
    """Microseconds per keyed event through what `_judge_key` does for it."""
    pairs = _keys(n)
    store = KeyStore(DAY_MS, max_keys)
    now = int(time.time() * 1000)
    if duplicate:  # every key already recorded at another offset
        for offset, (account, key) in enumerate(pairs):
            store.record(digest(changelog_key(account, key)), offset, now)
    base = n if duplicate else 0
    started = time.perf_counter()
    for offset, (account, key) in enumerate(pairs, start=base):
        record_key = changelog_key(account, key)
        hashed = digest(record_key)
        verdict = store.judge(hashed, offset, now)
        if verdict is Verdict.NEW:
            store.record(hashed, offset, now)
            FirstSight(account, key, "evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W", offset, now).to_json()
    took = time.perf_counter() - started
    return round(took / n * 1e6, 2)


def cpu(n: int) -> dict[str, float]:
    return {
        "new_key_us": _time_per_event(n, n * 2, duplicate=False),
        "new_key_store_full_us": _time_per_event(n, max(64, n // 10), duplicate=False),
        "duplicate_us": _time_per_event(n, n * 2, duplicate=True),
    }


def restore_pure(n: int) -> dict[str, float]:
    now = int(time.time() * 1000)
    records = [
        (changelog_key(a, k), FirstSight(a, k, "evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W", i, now).to_json())
        for i, (a, k) in enumerate(_keys(n))
    ]
    store = KeyStore(DAY_MS, n)
    started = time.perf_counter()
    for record_key, value in records:
        sight = FirstSight.from_json(value)
        store.restore(digest(record_key), sight.events_offset, sight.first_seen_ms, now)
    took = time.perf_counter() - started
    return {"records": n, "s_per_million": round(took / n * 1e6, 2), "record_bytes": len(records[0][1])}


def restore_kafka(n: int, bootstrap: str = LOCAL_KAFKA) -> dict[str, float]:
    topic = f"bench{uuid.uuid4().hex[:8]}.webhooks.idempotency"
    ensure_topics(bootstrap, [TopicSpec(topic, 1, 1, {"cleanup.policy": "compact,delete"})])
    try:
        producer = KafkaProducer(bootstrap, count_errors=False)
        now = int(time.time() * 1000)
        for i, (account, key) in enumerate(_keys(n)):
            value = FirstSight(account, key, "evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W", i, now).to_json()
            producer.produce(topic, value, key=changelog_key(account, key), partition=0)
        assert producer.close(120) == 0
        store = KeyStore(DAY_MS, n)
        started = time.perf_counter()
        read = 0
        for raw_key, raw_value in read_partition(bootstrap, topic, 0, last=n):
            sight = FirstSight.from_json(raw_value or b"")
            store.restore(digest(raw_key or b""), sight.events_offset, sight.first_seen_ms, now)
            read += 1
        took = time.perf_counter() - started
    finally:
        delete_topics(bootstrap, [topic])
    assert read == n and len(store) == n, (read, len(store))
    return {"records": n, "seconds": round(took, 2), "s_per_million": round(took / n * 1e6, 2)}


def _committed_to_end(bootstrap: str, group: str, topic: str) -> bool:
    consumer = Consumer(client_config(bootstrap, **{"group.id": group, "enable.auto.commit": False}))
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        for tp in tps:
            high = consumer.get_watermark_offsets(tp, timeout=10)[1]
            if high > 0 and committed[tp.partition] != high:
                return False
        return True
    finally:
        consumer.close()


def fanout(n: int, rounds: int = 2) -> dict[str, Any]:
    """Process CPU of a fan-out-only dispatcher per event, without and with an idempotency key."""
    accounts = [f"acct_{i:02d}" for i in range(12)]
    with tempfile.TemporaryDirectory() as folder:
        ca, _, _ = make_demo_certs(Path(folder) / "tls")
        with BenchStack(LOCAL_KAFKA, LOCAL_DATABASE_URL, ca, Path(folder), "idempotency") as stack:
            stack.seed([(a, "https://127.0.0.1:9/never", list(PRODUCT_TYPES)) for a in accounts])
            pid = stack.start("dispatcher", HOOKFLEET_STAGES="fanout").pid
            group = f"{stack.prefix}hookfleet-dispatcher"
            publisher = EventPublisher(CommonSettings(kafka_bootstrap_servers=LOCAL_KAFKA, topic_prefix=stack.prefix))
            per_event: dict[str, list[float]] = {"no_key_us": [], "key_us": []}
            try:
                for _ in range(rounds):
                    for mode in per_event:
                        events = [event_for(accounts[i % len(accounts)], i) for i in range(n)]
                        before = cpu_seconds(pid)
                        for event in events:
                            key = f"order-{uuid.uuid4()}" if mode == "key_us" else None
                            publisher.publish(event, idempotency_key=key)
                        assert publisher.flush() == 0
                        deadline = time.monotonic() + 300
                        while not _committed_to_end(LOCAL_KAFKA, group, stack.topics.events):
                            assert time.monotonic() < deadline, "the fan-out did not finish within 300 s"
                            time.sleep(0.2)
                        per_event[mode].append(round((cpu_seconds(pid) - before) / n * 1e6, 1))
            finally:
                publisher.close()
            changelog = stack.topic_messages(stack.topics.idempotency)
    assert changelog == n * rounds, changelog
    return {"events_per_run": n, "runs": per_event}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idempotency", description=__doc__)
    parser.add_argument("keys", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--kafka", type=int, default=0, metavar="N", help="also restore N records from the broker")
    parser.add_argument("--fanout", type=int, default=0, metavar="N", help="also a real fan-out stage, N events a run")
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": describe()}
    report["memory"] = memory(args.keys)
    report["cpu_per_keyed_event"] = cpu(min(args.keys, 200_000))
    report["restore"] = restore_pure(min(args.keys, 200_000))
    if args.kafka:
        report["restore_from_kafka"] = restore_kafka(args.kafka)
    if args.fanout:
        report["fanout_cpu_per_event"] = fanout(args.fanout)
    print(json.dumps(report, indent=2))
    print(save_report("idempotency", report))


if __name__ == "__main__":
    main()
