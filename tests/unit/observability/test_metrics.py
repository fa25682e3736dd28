from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from opendps.observability.metrics import Metrics


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def test_counters_are_exported_with_their_labels() -> None:
    metrics = Metrics()
    metrics.count_registration("assigned")
    metrics.count_registration("assigned")
    metrics.count_attestation_failure("bad_signature")
    metrics.count_service_operation("enrollment.put", "ok")
    samples = _samples(metrics)
    assert samples[("opendps_registrations_total", (("outcome", "assigned"),))] == 2
    assert samples[("opendps_attestation_failures_total", (("reason", "bad_signature"),))] == 1
    key = (
        "opendps_service_api_operations_total",
        (("operation", "enrollment.put"), ("outcome", "ok")),
    )
    assert samples[key] == 1


def test_request_latency_is_a_histogram_by_route_template_and_status_class() -> None:
    metrics = Metrics()
    metrics.observe_request("/enrollments/{id}", "PUT", 201, 0.003)
    samples = _samples(metrics)
    labels = (("method", "PUT"), ("route", "/enrollments/{id}"), ("status", "2xx"))
    assert samples[("opendps_http_request_duration_seconds_count", labels)] == 1
    bucket = tuple(sorted((*labels, ("le", "0.005"))))
    assert samples[("opendps_http_request_duration_seconds_bucket", bucket)] == 1
    below = tuple(sorted((*labels, ("le", "0.0025"))))
    assert samples[("opendps_http_request_duration_seconds_bucket", below)] == 0


def test_open_connections_gauge_goes_up_and_down() -> None:
    metrics = Metrics()
    metrics.connection_opened("https")
    metrics.connection_opened("https")
    metrics.connection_closed("https")
    assert _samples(metrics)[("opendps_open_connections", (("listener", "https"),))] == 1


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.count_registration("assigned")
    assert ("opendps_registrations_total", (("outcome", "assigned"),)) not in _samples(second)
    assert REGISTRY.get_sample_value("opendps_registrations_total", {"outcome": "assigned"}) is None
