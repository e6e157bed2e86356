#!/usr/bin/env bash
# Checks the observability artefacts in manifests/deploy/:
#   - prometheus-rules.yaml is valid (promtool check rules) and passes its unit
#     tests (promtool test rules testdata/alerts_test.yaml);
#   - prometheusrule.yaml is what gen-prometheusrule.sh makes of it;
#   - every runbook_url points at a "### <alert>" heading of docs/operations.md;
#   - every expression of grafana-dashboard.json parses (as recording rules,
#     since old promtool versions cannot check a bare expression), uses the
#     ${datasource} variable and filters $namespace/$bundle or job="driftwatch"
#     (test/dashboard_exprs.py).
# Installs promtool (Debian's prometheus package) when it is missing, which
# needs root and apt-get. Needs python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { # need COMMAND PACKAGE
	command -v "$1" >/dev/null && return
	if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
		echo "test/promtool.sh: $1 is missing; install it (Debian: apt-get install $2, as root) or put it on PATH" >&2
		exit 1
	fi
	echo "test/promtool.sh: installing $2 for $1" >&2
	# --no-install-recommends: not prometheus-node-exporter. On a host that
	# runs systemd the package also enables the prometheus service.
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
need promtool prometheus
need python3 python3
promtool --version 2>&1 | head -n 1

deploy=manifests/deploy
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== rules"
promtool check rules "$deploy/prometheus-rules.yaml"
promtool test rules "$deploy/testdata/alerts_test.yaml"

echo "== PrometheusRule is generated from the rules file"
"$deploy/gen-prometheusrule.sh" - >"$tmp/prometheusrule.yaml"
if ! diff -u "$deploy/prometheusrule.yaml" "$tmp/prometheusrule.yaml"; then
	echo "$deploy/prometheusrule.yaml is stale: run $deploy/gen-prometheusrule.sh" >&2
	exit 1
fi
echo "  SUCCESS: $deploy/prometheusrule.yaml is up to date"

# Kustomize loads no file from outside a kustomization's directory and Helm
# none from outside the chart: those directories hold copies, kept equal here.
echo "== copies for the monitoring component and the Helm chart"
for pair in "$deploy/servicemonitor.yaml $deploy/components/monitoring/servicemonitor.yaml" \
	"$deploy/prometheusrule.yaml $deploy/components/monitoring/prometheusrule.yaml" \
	"$deploy/prometheus-rules.yaml charts/driftwatch/files/prometheus-rules.yaml" \
	"$deploy/crd.yaml charts/driftwatch/crds/crd.yaml" \
	"$deploy/crd-restriction.yaml charts/driftwatch/crds/crd-restriction.yaml"; do
	set -- $pair
	if ! cmp -s "$1" "$2"; then
		echo "$2 differs from $1: cp $1 $2" >&2
		exit 1
	fi
done
echo "  SUCCESS: 5 copies equal their originals"

echo "== runbook anchors"
python3 - "$deploy/prometheus-rules.yaml" docs/operations.md <<'EOF'
import re, sys
rules, readme = (open(p).read() for p in sys.argv[1:])
base = "https://github.com/driftwatch/driftwatch/blob/main/docs/operations.md#"
# GitHub's anchor of a heading: lowercased, punctuation other than - and _
# dropped, spaces to hyphens.
anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#+ (.+)$", readme, re.M)}
alerts = re.findall(r"^\s*- alert: (\S+)", rules, re.M)
urls = re.findall(r"^\s*runbook_url: (\S+)", rules, re.M)
bad = [] if len(alerts) == len(urls) else ["not every alert has one runbook_url"]
for alert, url in zip(alerts, urls):
    if url != base + alert.lower():
        bad.append(f"{alert}: runbook_url {url} is not {base}{alert.lower()}")
    if not re.search(rf"^### {alert}$", readme, re.M) or alert.lower() not in anchors:
        bad.append(f"{alert}: docs/operations.md has no heading '### {alert}'")
if bad:
    sys.exit("\n".join(bad))
print(f"  SUCCESS: {len(alerts)} alerts, each with its runbook in docs/operations.md")
EOF

echo "== dashboard expressions"
python3 test/dashboard_exprs.py --rules "$deploy/grafana-dashboard.json" >"$tmp/dashboard-rules.yaml"
if ! promtool check rules "$tmp/dashboard-rules.yaml" >"$tmp/out" 2>&1; then
	sed "s|$tmp/dashboard-rules.yaml|dashboard rules|" "$tmp/out" >&2
	echo "expression N of the dashboard: python3 test/dashboard_exprs.py $deploy/grafana-dashboard.json | sed -n Np" >&2
	exit 1
fi
sed "s|$tmp/dashboard-rules.yaml|$deploy/grafana-dashboard.json (as recording rules)|" "$tmp/out"
