"""Metric shapes that the alerts and the SLO depend on."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from hookfleet import metrics
from hookfleet.settings import DeliverySettings

TIMEOUT_S = DeliverySettings.model_fields["delivery_timeout_s"].default


def quantile_upper_bound(buckets: tuple[float, ...], observations: list[float], q: float) -> float:
    """The bucket bound histogram_quantile interpolates up to for quantile q."""
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", buckets=buckets, registry=registry)
    for value in observations:
        histogram.observe(value)
    rank = q * len(observations)
    for sample in next(iter(registry.collect())).samples:
        if sample.name == "h_bucket" and sample.value >= rank:
            return float(sample.labels["le"])
    raise AssertionError("no bucket")


def test_two_percent_timeouts_read_as_a_p99_just_above_the_timeout() -> None:
    """A 10 s timeout returns a little after 10 s; it must not land in a bucket that reaches to 30 s."""
    observations = [0.2] * 98 + [TIMEOUT_S + 0.02] * 2
    bucket_bounds = metrics.DELIVERY_DURATION._upper_bounds
    assert quantile_upper_bound(tuple(bucket_bounds[:-1]), observations, 0.99) <= TIMEOUT_S + 0.5
    assert {9.0, 10.0, 10.5, 12.0} <= set(bucket_bounds)


def test_the_slo_threshold_is_a_bucket_bound_of_the_settled_histogram() -> None:
    assert 600 in metrics.SETTLED_BUCKETS
    assert 10 + 60 + 300 + 4 * TIMEOUT_S < 600, "the retry schedule must end inside the SLO threshold"
