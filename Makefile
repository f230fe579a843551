# Fleetgate build. `make demo` runs the real thing; `make test` runs every test.
SHELL     := /bin/bash
GO        ?= go
GOBIN     ?= $(shell $(GO) env GOPATH)/bin
BIN       := bin
BUF_VERSION            := v1.75.0
PROTOC_GEN_GO_VERSION  := v1.36.12
PROTOC_GEN_GRPC_VERSION:= v1.6.2
STATICCHECK_VERSION    := v0.8.2
# h2spec, the HTTP/2 conformance suite dataplane/http2's tests run (no go.mod: +incompatible).
H2SPEC_VERSION         := v2.2.1+incompatible

.PHONY: all build gen check-gen lint test unit e2e faults fuzz demo bench bench-controlplane tools clean

all: build

build:
	$(GO) build -o $(BIN)/ ./controlplane/cmd/controlplane ./controlplane/cmd/gatewayctl ./dataplane/cmd/dataplane

# Tools pinned by version; installed with `go install`, nothing else needed.
tools:
	$(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION)
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GO) install github.com/summerwind/h2spec/cmd/h2spec@$(H2SPEC_VERSION)

gen:
	PATH="$(GOBIN):$$PATH" $(GOBIN)/buf generate

# Fails when gen/ is not what `make gen` writes from proto/.
check-gen: gen
	@git diff --exit-code --stat -- gen/ || (echo "gen/ is stale: run 'make gen' and commit" >&2; exit 1)
	@test -z "$$(git status --porcelain -- gen/)" || (git status --porcelain -- gen/; echo "gen/ has untracked files: run 'make gen' and commit" >&2; exit 1)

lint:
	$(GOBIN)/buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); test -z "$$out" || (echo "gofmt needed: $$out" >&2; exit 1)
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...

# Every test: unit and integration tests beside the code, then the end-to-end package.
test: unit e2e

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v -e /scripts/e2e)

# The end-to-end package (scripts/e2e): the real binaries together, the Debian etcd where a test
# needs one of its own, and the fault and soak tests (about 6 minutes; the soak runs 60 s, 2 minutes
# with CI set). E2E_FLAGS adds go test flags: `make faults E2E_FLAGS='-run Soak -soak=10m'
# E2E_TIMEOUT=30m` soaks for 10 minutes.
E2E_FLAGS   ?=
E2E_TIMEOUT ?= 20m
e2e: build
	$(GO) test -count=1 -v -timeout $(E2E_TIMEOUT) ./scripts/e2e/ $(E2E_FLAGS) 2>&1 | grep -Ev '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

# Only the fault and soak tests of scripts/e2e (3-member etcd, kill -9, flapping backends, soak).
faults: build
	$(GO) test -count=1 -v -timeout $(E2E_TIMEOUT) -run '^Test(Fault|Soak)' ./scripts/e2e/ $(E2E_FLAGS) 2>&1 | grep -Ev '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

# Each fuzz target for FUZZTIME (scripts/fuzz.sh); their seed corpora (testdata/fuzz) also run in
# `make test`.
FUZZTIME ?= 10s
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

demo: build
	./scripts/demo.sh

bench: build
	./scripts/bench.sh

# 1,000 simulated workers x 10, 1,000 and 10,000 servers against one control plane, then two replicas;
# then one worker's prober against 10,000 loopback servers (WORKERS, SERVERS, REPLICAS, ROUNDS, ...).
bench-controlplane: build
	SKIP_BUILD=1 ./scripts/bench-controlplane.sh

clean:
	rm -rf $(BIN)
