"""Every service's /metrics read by the Prometheus project's own Python parser.

Usage: prometheus_scrape.py URL... (each a service's /metrics). Exits non-zero on the
first malformed exposition or inconsistent histogram.
"""

import math
import sys
import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

for url in sys.argv[1:]:
    with urllib.request.urlopen(url) as reply:
        kind = reply.headers["Content-Type"]
        text = reply.read().decode()
    assert kind.startswith("text/plain") and "version=0.0.4" in kind, (url, kind)
    families = list(text_string_to_metric_families(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), (url, "a family is declared twice", names)
    up = next(f for f in families if f.name == "mesh_up")
    assert [s.value for s in up.samples] == [1.0], (url, up)
    for family in families:
        assert family.type in {"counter", "gauge", "histogram", "summary", "untyped"}, (url, family)
        assert family.documentation, (url, family.name, "has no HELP")
        for sample in family.samples:
            assert sample.name.startswith(family.name), (url, family.name, sample)
            assert not math.isnan(sample.value), (url, sample)
            if family.type == "counter":
                assert sample.value >= 0, (url, sample)
        if family.type != "histogram":
            continue
        # Per label set: cumulative buckets ending at +Inf, which equals _count.
        series = defaultdict(lambda: {"buckets": [], "count": None, "sum": None})
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            key = tuple(sorted(labels.items()))
            if sample.name.endswith("_bucket"):
                series[key]["buckets"].append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_count"):
                series[key]["count"] = sample.value
            elif sample.name.endswith("_sum"):
                series[key]["sum"] = sample.value
        for key, s in series.items():
            buckets = sorted(s["buckets"])
            assert buckets and buckets[-1][0] == math.inf, (url, family.name, key, "no +Inf bucket")
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), (url, family.name, key, "buckets not cumulative")
            assert s["count"] == counts[-1], (url, family.name, key, "+Inf bucket is not _count")
            assert s["sum"] is not None, (url, family.name, key, "no _sum")

print("ok")
