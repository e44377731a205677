"""Reading an exposition in tests, with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def values(text: str, metric: str) -> dict[str, float]:
    """`gateway` (plus `reason` where present) → value, for one metric."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == metric:
                label = s.labels.get("gateway", "")
                out[label + (":" + s.labels["reason"] if "reason" in s.labels else "")] = s.value
    return out


def total(text: str, metric: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == metric)


def samples(text: str, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Sorted label pairs → value, for one metric."""
    return {tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name == metric}
