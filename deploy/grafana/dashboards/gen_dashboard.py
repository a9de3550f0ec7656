"""Writes kvwire.json, the Grafana dashboard of the sharer/receiver metrics.

Kept as a generator so the panel queries stay readable; run `python3 gen_dashboard.py` after
editing and commit both files. Metric names come from service-kit's metrics catalog.
"""
import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "kvwire-prometheus"}


def panel(pid, title, exprs, unit, x, y, w=12, h=8, kind="timeseries"):
    return {
        "id": pid,
        "title": title,
        "type": kind,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": e, "legendFormat": lf}
            for i, (e, lf) in enumerate(exprs)
        ],
    }


def quantile(q, metric, by):
    return (
        f"histogram_quantile({q}, sum by (le, {by}) "
        f"(rate({metric}_bucket{{service=~\"$service\"}}[$__rate_interval])))"
    )


panels = [
    panel(1, "Stage latency p50", [(quantile(0.5, "kvwire_stage_duration_seconds", "service, stage"),
                                    "{{service}} {{stage}}")], "s", 0, 0),
    panel(2, "Stage latency p95", [(quantile(0.95, "kvwire_stage_duration_seconds", "service, stage"),
                                    "{{service}} {{stage}}")], "s", 12, 0),
    panel(3, "Bytes per second by accounting level (blob, grpc, tcp)",
          [("sum by (service, level) (rate(kvwire_bytes_total{service=~\"$service\"}[$__rate_interval]))",
            "{{service}} {{level}}")], "Bps", 0, 8),
    panel(4, "Requests per second by method and status",
          [("sum by (service, method, status) "
            "(rate(kvwire_rpc_requests_total{service=~\"$service\"}[$__rate_interval]))",
            "{{service}} {{method}} {{status}}")], "reqps", 12, 8),
    panel(5, "RPC latency p50 / p95 by method",
          [(quantile(0.5, "kvwire_rpc_duration_seconds", "service, method"), "p50 {{service}} {{method}}"),
           (quantile(0.95, "kvwire_rpc_duration_seconds", "service, method"), "p95 {{service}} {{method}}")],
          "s", 0, 16),
    panel(6, "Errors per second by type",
          [("sum by (service, error_type) "
            "(rate(kvwire_rpc_errors_total{service=~\"$service\"}[$__rate_interval]))",
            "{{service}} {{error_type}}")], "reqps", 12, 16),
    panel(7, "Refinement sessions held / evicted per second",
          [("sum(kvwire_sessions_active)", "active"),
           ("sum by (reason) (rate(kvwire_sessions_evicted_total[$__rate_interval]))", "evicted {{reason}}")],
          "short", 0, 24),
    panel(8, "KVWire frames per second (sent by the sharer, decoded by the receiver)",
          [("sum by (service) (rate(kvwire_frames_total{service=~\"$service\"}[$__rate_interval]))",
            "{{service}}")], "short", 12, 24),
    # Process metrics carry no `service` label; the scrape job's `role` label names the service.
    panel(9, "Resident memory",
          [("max by (role) (process_resident_memory_bytes{role=~\"$service\"})", "{{role}}")],
          "bytes", 0, 32),
    panel(10, "CPU cores used",
          [("sum by (role) (rate(process_cpu_seconds_total{role=~\"$service\"}[$__rate_interval]))",
            "{{role}}")], "short", 12, 32),
]

dashboard = {
    "uid": "kvwire-c2c-services",
    "title": "kvwire-c2c: sharer and receiver",
    "tags": ["kvwire-c2c"],
    "timezone": "utc",
    "schemaVersion": 39,
    "version": 1,
    "editable": False,
    "refresh": "10s",
    "time": {"from": "now-30m", "to": "now"},
    "templating": {"list": [{
        "name": "service",
        "label": "service",
        "type": "query",
        "datasource": DS,
        "query": {"query": "label_values(kvwire_rpc_requests_total, service)", "refId": "service"},
        "definition": "label_values(kvwire_rpc_requests_total, service)",
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }]},
    "panels": panels,
}

out = Path(__file__).with_name("kvwire.json")
out.write_text(json.dumps(dashboard, indent=2) + "\n")
print(f"wrote {out}")
