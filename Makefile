# driftwatch — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
export GOTOOLCHAIN := local
# apimachinery's fieldsv1string interns managedFields: objects of the same
# shape share one copy in the informer caches (see README, Performance).
export GOFLAGS := $(GOFLAGS) -tags=fieldsv1string

CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/driftwatch
STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(CACHE)/tools/staticcheck-$(STATICCHECK_VERSION)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build demo test tools deps lint vet staticcheck unit clean

all: build

build: ## the driftwatch binary in bin/
	go build -ldflags "-X main.version=$(VERSION)" -o bin/driftwatch .

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
# checks. go test's own summary comes before the promtool checks.
test: tools deps lint ## vet, staticcheck, every test, promtool checks
	go test -count=1 -timeout 40m ./...
	test/promtool.sh

clean:
	rm -rf bin
