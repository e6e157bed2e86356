#!/usr/bin/env python3
"""Prints every PromQL expression of a Grafana dashboard, one per line, with
Grafana's variables replaced so that promtool can parse them: $datasource
removed, $namespace and $bundle -> .*, $__rate_interval, $__interval and
$__range -> 5m.

    test/dashboard_exprs.py manifests/deploy/grafana-dashboard.json
    test/dashboard_exprs.py --rules manifests/deploy/grafana-dashboard.json

--rules prints them as a Prometheus rules file instead (one recording rule
`dashboard:expr_N` per expression), for `promtool check rules`: old promtool
versions have no command that checks a bare expression.

It also checks, and exits 1 (naming the panel) when one fails, that every
panel and target uses the ${datasource} variable, that every selector of a
per-Bundle metric filters namespace=~"$namespace" and bundle=~"$bundle", and
that every other selector filters job="driftwatch". Standard library only.
"""
import json
import re
import sys

# Metrics with namespace and bundle labels (DESIGN.md, Metrics).
BUNDLE_METRICS = {
    "driftwatch_bundle_ready",
    "driftwatch_bundle_resources",
    "driftwatch_bundle_last_sync_timestamp_seconds",
    "driftwatch_drift_detected_total",
    "driftwatch_drift_corrections_total",
    "driftwatch_apply_conflicts_total",
    "driftwatch_field_fights_total",
    "driftwatch_pod_crashes_total",
}
BUNDLE_FILTERS = ('namespace=~"$namespace"', 'bundle=~"$bundle"')
JOB_FILTER = 'job="driftwatch"'
DATASOURCE = "${datasource}"

SUBSTITUTIONS = [
    (re.compile(r"\$\{?datasource\}?"), ""),
    (re.compile(r"\$\{?(namespace|bundle)(:\w+)?\}?"), ".*"),
    (re.compile(r"\$\{?(__rate_interval|__interval|__range)\}?"), "5m"),
]

# A name followed by an optional label-matcher block; selectors() skips
# strings, range brackets, grouping labels, keywords and function calls.
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "le", "inf", "nan",
}


def panels(dashboard):
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows hold their panels


def selectors(expr):
    """Yields (metric, matchers) for every vector selector of expr."""
    # A matcher block is consumed with its name, so label names and values
    # inside it are never taken for metric names.
    i, n = 0, len(expr)
    while i < n:
        m = SELECTOR.match(expr, i)
        if not m or m.start() != i:
            if expr[i] == "{":  # a selector without a metric name
                j = expr.index("}", i)
                yield "", expr[i:j + 1]
                i = j + 1
            elif expr[i] == '"':
                i = expr.index('"', i + 1) + 1
            elif expr[i] == "[":
                i = expr.index("]", i) + 1
            else:
                i += 1
            continue
        name, matchers = m.group(1), m.group(2) or ""
        rest = expr[m.end():].lstrip()
        i = m.end()
        # group labels: by (a, b), on (a), ...
        if name in ("by", "without", "on", "ignoring", "group_left", "group_right") and rest.startswith("("):
            i = expr.index(")", i) + 1
            continue
        if name.lower() in KEYWORDS or re.fullmatch(r"[0-9].*", name):
            continue
        # a function call, or an aggregation: sum(...), sum by (a) (...)
        if not matchers and re.match(r"(\(|(by|without)\s*\()", rest):
            continue
        yield name, matchers


def check(dashboard):
    problems = []
    for p in panels(dashboard):
        if p.get("type") == "row":
            continue
        title = p.get("title", "?")
        ds = p.get("datasource")
        if not isinstance(ds, dict) or ds.get("uid") != DATASOURCE:
            problems.append(f"panel {title!r}: datasource is not {DATASOURCE}")
        for t in p.get("targets", []):
            tds = t.get("datasource")
            if not isinstance(tds, dict) or tds.get("uid") != DATASOURCE:
                problems.append(f"panel {title!r} target {t.get('refId')}: datasource is not {DATASOURCE}")
            expr = t.get("expr", "")
            if "\n" in expr:
                problems.append(f"panel {title!r} target {t.get('refId')}: expression spans lines")
            for metric, matchers in selectors(expr):
                if metric in BUNDLE_METRICS:
                    missing = [f for f in BUNDLE_FILTERS if f not in matchers]
                elif metric == "vector" or metric == "":
                    continue
                else:
                    missing = [JOB_FILTER] if JOB_FILTER not in matchers else []
                if missing:
                    problems.append(f"panel {title!r} target {t.get('refId')}: {metric} lacks {', '.join(missing)}")
    return problems


def exprs(dashboard):
    for p in panels(dashboard):
        for t in p.get("targets", []):
            expr = t.get("expr")
            if not expr:
                continue
            for pattern, repl in SUBSTITUTIONS:
                expr = pattern.sub(repl, expr)
            yield p.get("title", "?"), " ".join(expr.split())


def main(argv):
    rules = "--rules" in argv
    paths = [a for a in argv if a != "--rules"]
    if len(paths) != 1:
        sys.exit(__doc__)
    with open(paths[0]) as f:
        dashboard = json.load(f)
    problems = check(dashboard)
    found = list(exprs(dashboard))
    for title, expr in found:
        if "$" in expr:
            problems.append(f"panel {title!r}: unknown variable left in {expr}")
    if not found:
        problems.append("no expressions found")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    if rules:
        print("groups:\n  - name: dashboard\n    rules:")
        for i, (title, expr) in enumerate(found, 1):
            print(f"      # {json.dumps(title)}")
            print(f"      - record: dashboard:expr_{i}")
            print(f"        expr: {json.dumps(expr)}")  # a JSON string is a YAML double-quoted scalar
    else:
        for _, expr in found:
            print(expr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
