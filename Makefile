# driftwatch — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
export GOTOOLCHAIN := local
# apimachinery's fieldsv1string interns managedFields: objects of the same
# shape share one copy in the informer caches (see docs/performance.md).
export GOFLAGS := $(GOFLAGS) -tags=fieldsv1string

CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/driftwatch
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(CACHE)/tools/staticcheck-$(STATICCHECK_VERSION)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build demo test race tools deps lint vet staticcheck unit clean bench bench-sweep bench-fleet bench-smoke image image-test fuzz FORCE

all: build

build: ## the driftwatch binary in bin/
	go build -ldflags "-X main.version=$(VERSION)" -o bin/driftwatch .

# The container image, without a Docker daemon (tools/image, with
# go-containerregistry): a static binary and Debian's CA bundle on an empty
# base, non-root. Writes bin/image (OCI layout) and bin/image.tar;
# `docker load -i bin/image.tar` or `crane push bin/image.tar REF` takes it.
# The Dockerfile builds the same for those who have a Docker engine.
IMAGE ?= ghcr.io/driftwatch/driftwatch:$(VERSION)
bin/driftwatch-linux-amd64: FORCE
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $@ .

image: bin/driftwatch-linux-amd64 ## the container image (bin/image, bin/image.tar), no Docker needed
	cd tools/image && GOWORK=off go run . -binary ../../bin/driftwatch-linux-amd64 -out ../../bin/image -tag $(IMAGE) -version $(VERSION)

image-test: bin/driftwatch-linux-amd64
	cd tools/image && GOWORK=off GOFLAGS= go vet ./... && GOWORK=off GOFLAGS= DRIFTWATCH_BINARY=../../bin/driftwatch-linux-amd64 go test -count=1 ./...

tools: ## build the local control plane once (cached by version under $(CACHE)/bin)
	@tools/build.sh >/dev/null

demo: tools build ## the agent on the local control plane with examples/; Ctrl-C stops everything
	go build -o bin/localcluster ./test/localcluster
	exec bin/localcluster -agent bin/driftwatch

$(STATICCHECK):
	@mkdir -p $(dir $@)
	GOBIN=$(dir $@) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(dir $@)staticcheck $@

vet:
	@unformatted=$$(gofmt -l . tools); if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	go vet ./...
	cd tools && go vet ./... && cd etcd && go vet ./...

staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...

lint: vet staticcheck

deps: ## Prometheus and promtool (Debian's prometheus package) and python3 for the monitoring tests
	@missing=(); \
	for c in prometheus:prometheus promtool:prometheus python3:python3; do \
		command -v $${c%%:*} >/dev/null || missing+=($${c#*:}); \
	done; \
	if [ $${#missing[@]} -gt 0 ]; then \
		if [ "$$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then \
			echo "make deps: install $${missing[*]} (Debian packages; as root: apt-get install $${missing[*]})" >&2; exit 1; \
		fi; \
		echo "installing $${missing[*]}" >&2; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $${missing[*]} >/dev/null; \
	fi

# Every test: unit tests, integration tests on the real control plane (one
# of them with a real Prometheus), then the alert rules' and dashboard's
# checks, then a smoke run of the benchmark (so that it cannot rot). go
# test's own summary comes before the promtool checks.
test: tools deps lint build ## vet, staticcheck, every test, promtool checks, benchmark smoke run
	go test -count=1 -timeout 40m ./...
	@$(MAKE) --no-print-directory image-test
	test/promtool.sh
	@$(MAKE) --no-print-directory bench-smoke

# The unit tests and the end-to-end tests with the race detector, the
# agent under test built with it too (a race it reports fails the test).
race: tools deps build ## every unit and end-to-end test under the race detector (about 25 min)
	go test -race -count=1 -timeout 20m $$(go list ./... | grep -v -e /test/ -e /tools)
	DRIFTWATCH_E2E_RACE=1 go test -count=1 -timeout 60m ./test/e2e

bin/bench: FORCE
	go build -o bin/bench ./test/bench

# The benchmark (test/bench): a control plane of its own, the agent from
# this checkout as a separate process, the baselines in the same run. A table
# on stdout, bin/bench.json and bin/bench.svg; kube-apiserver's CPU profiles
# of the ceiling and of the initial sync in bin/bench-apiserver-*.pprof
# (docs/performance.md breaks them down). About 20 min, 10 of them the idle
# window (-idle-window). BENCH_FLAGS adds flags (bin/bench -h lists them).
bench: tools build bin/bench ## the benchmark: 10,000 ConfigMaps + 100 Deployments beside its baselines and targets
	bin/bench -apiserver-profile bin/bench-apiserver $(BENCH_FLAGS)

# The fleet simulator: 100, 1,000 and 3,000 agents' upstream side in one
# process against one upstream control plane (docs/upstream.md). About
# 20 min.
bench-fleet: tools bin/bench ## upstream CPU, memory, etcd and requests for fleets of 100, 1,000 and 3,000 agents
	bin/bench -scenario fleet-sim -fleet-sizes 100,1000,3000 -out bin/bench $(BENCH_FLAGS)

# The same figures at growing object counts, a fresh control plane each;
# stops with a message before a size that would exceed the time budget
# (-sweep-budget, 4 h) or the memory available.
bench-sweep: tools build bin/bench ## the benchmark at 1k, 5k, 10k, 20k, 50k and 100k ConfigMaps (about 1.5 h)
	bin/bench -sweep 1000,5000,10000,20000,50000,100000 -idle-window 2m -out bin/bench-sweep $(BENCH_FLAGS)

# 300 objects in under a minute. Fails when a figure cannot be measured or a
# correctness check fails (sync, every edit reverted, no writes in a re-sync
# of unchanged Bundles), never on a missed performance target. The table
# goes to bin/bench-smoke.txt and is printed when the run fails.
bench-smoke: tools build bin/bench
	@if bin/bench -objects 300 -deployments 10 -edits 40 -burst 50 -idle-window 5s -settle-timeout 15s \
		-out bin/bench-smoke >bin/bench-smoke.txt 2>bin/bench-smoke.log; then \
		echo "benchmark smoke run: ok; $$(grep '^targets:' bin/bench-smoke.txt); $$(tail -1 bin/bench-smoke.txt); table in bin/bench-smoke.txt"; \
	else cat bin/bench-smoke.txt bin/bench-smoke.log; echo "benchmark smoke run: FAILED"; exit 1; fi

# Each fuzz target for FUZZTIME (default 60s), one after another: go test
# -fuzz takes one target of one package per run. A failing target writes
# its input to the package's testdata/fuzz/ (commit it with the fix: it
# then runs in `make test`, as every checked-in seed does); the others
# still run, and make fails at the end. One target:
# make fuzz FUZZ_TARGETS=drift/detect:FuzzDetect FUZZTIME=5m
FUZZTIME ?= 60s
FUZZ_TARGETS ?= manifests:FuzzDecode manifests/kustomize:FuzzKustomize \
	drift/detect:FuzzDetect drift/detect:FuzzRemovePath drift/detect:FuzzIgnoreSuggestion helmrun:FuzzLoadChart

fuzz: ## each fuzz target for FUZZTIME (default 60s): decoding, Kustomize and chart input, drift rules
	@failed=""; \
	for t in $(FUZZ_TARGETS); do \
		pkg=./$${t%%:*}; fn=$${t#*:}; \
		echo "fuzz: $$fn in $$pkg for $(FUZZTIME)"; \
		go test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg || failed="$$failed $$fn"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: failed:$$failed" >&2; exit 1; fi

clean:
	rm -rf bin

FORCE:
