#!/usr/bin/env python3
"""Checks of the Grafana dashboard (deploy/grafana/dashboards/kvwire.json), standard library only.

  dashboard_check.py validate DASHBOARD DATASOURCES_YML
      The JSON parses; panel ids are unique; every panel and every target names the provisioned
      Prometheus data source (its uid read from the provisioning file); every target has a
      non-empty PromQL expression and a refId; grid positions fit the 24-column grid.
  dashboard_check.py query PROMETHEUS_URL DASHBOARD
      Evaluates every expression of the dashboard (panel targets and the template variable's
      query) through Prometheus' HTTP API (/api/v1/query), with Grafana's variables
      substituted ($service -> .*, $__rate_interval -> 1m); fails unless each returns at least
      one series with a number (not NaN).

Exit status 0 when every check passes, 1 otherwise (each failure printed).
"""
import json
import math
import re
import sys
import urllib.parse
import urllib.request

SUBSTITUTIONS = {"$__rate_interval": "1m", "$service": ".*"}


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def provisioned_uid(datasources_yml):
    """The uid of the provisioned data source (the file is flat YAML: `uid: value`)."""
    with open(datasources_yml, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\s*uid:\s*(\S+)\s*$", line)
            if m:
                return m.group(1).strip("'\"")
    return None


def validate(dashboard_path, datasources_yml):
    problems = []
    try:
        d = load(dashboard_path)
    except (OSError, ValueError) as e:
        return [f"{dashboard_path}: {e}"]
    uid = provisioned_uid(datasources_yml)
    if not uid:
        problems.append(f"{datasources_yml}: no data source uid")
    for key in ("uid", "title", "panels"):
        if key not in d:
            problems.append(f"dashboard: no {key!r}")
    ids = [p.get("id") for p in d.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append(f"panel ids not unique: {ids}")
    for p in d.get("panels", []):
        name = f"panel {p.get('id')} {p.get('title')!r}"
        ds = p.get("datasource") or {}
        if ds.get("type") != "prometheus" or ds.get("uid") != uid:
            problems.append(f"{name}: datasource {ds} is not the provisioned prometheus {uid!r}")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "xywh") or g["x"] + g["w"] > 24:
            problems.append(f"{name}: gridPos {g} does not fit the 24-column grid")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{name}: no targets")
        for t in targets:
            tds = t.get("datasource") or {}
            if tds.get("uid") != uid:
                problems.append(f"{name} target {t.get('refId')}: datasource {tds}")
            if not t.get("refId") or not str(t.get("expr", "")).strip():
                problems.append(f"{name}: target without refId or expr: {t}")
    for v in d.get("templating", {}).get("list", []):
        if (v.get("datasource") or {}).get("uid") != uid:
            problems.append(f"variable {v.get('name')}: datasource {v.get('datasource')}")
    return problems


def expressions(d):
    """(where, PromQL) of every panel target and query variable."""
    out = []
    for p in d.get("panels", []):
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q or "")
        if m:
            # label_values(metric, label) is Grafana's; the series query behind it.
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def substitute(expr):
    for k, v in SUBSTITUTIONS.items():
        expr = expr.replace(k, v)
    return expr


def query(prometheus, expr):
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
    return body["data"]["result"]


def check_queries(prometheus, dashboard_path):
    problems = []
    for where, expr in expressions(load(dashboard_path)):
        promql = substitute(expr)
        try:
            result = query(prometheus, promql)
        except (OSError, ValueError) as e:
            problems.append(f"{where}: {promql}: {e}")
            continue
        numbers = [float(s["value"][1]) for s in result]
        finite = [x for x in numbers if not math.isnan(x)]
        status = "ok" if finite else "NO SERIES" if not result else "only NaN"
        print(f"  {status:9} {len(result):3} series  {where}: {promql}")
        if not finite:
            problems.append(f"{where}: {promql}: {status}")
    return problems


def main(argv):
    if len(argv) == 4 and argv[1] == "validate":
        problems = validate(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "query":
        problems = check_queries(argv[2].rstrip("/"), argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
