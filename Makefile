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

.PHONY: all build demo test tools lint vet staticcheck unit clean

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

# Every test: unit tests and integration tests on the real control plane.
# go test's own summary comes last.
test: tools lint ## vet, staticcheck, then every test
	go test -count=1 -timeout 40m ./...

clean:
	rm -rf bin
