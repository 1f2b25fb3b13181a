# Sluice build. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
# Pinned generator versions: protoc from Debian 12 (protobuf-compiler 3.21.12), the Go
# plugins through the `tool` directives in go.mod.
PROTOC_VERSION := libprotoc 3.21.12
# The commit, plus a hash of the uncommitted changes when there are any, so that two
# different dirty trees never share a build ID.
BUILD_ID ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty-$$(git diff HEAD | sha256sum | cut -c1-8))
LDFLAGS := -X github.com/sluice-stream/sluice/pkg/version.buildID=$(BUILD_ID)

.PHONY: help build proto verify test test-short bench e2e clean deps local

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install the system packages the build and tests need (Debian, as root)
	./scripts/install-deps.sh

build: ## build jobmanager, taskmanager and streamctl into bin/
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

local: build ## run the example job on a local cluster
	$(BIN)/streamctl local

proto: ## regenerate the Go code from proto/
	@test "$$(protoc --version)" = "$(PROTOC_VERSION)" || { echo "protoc must be $(PROTOC_VERSION) (make deps)"; exit 1; }
	protoc -I proto \
		--plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
		--plugin=protoc-gen-go-grpc=$$($(GO) tool -n protoc-gen-go-grpc) \
		--go_out=. --go_opt=module=github.com/sluice-stream/sluice \
		--go-grpc_out=. --go-grpc_opt=module=github.com/sluice-stream/sluice \
		proto/sluice/v1/*.proto

verify: ## fail on stale generated code, gofmt, go vet or an untidy go.mod
	./scripts/verify.sh

test: ## the full test suite (what CI runs)
	./scripts/test.sh

bench: build ## benchmarks that print ratios against raw baselines
	./scripts/bench.sh

clean:
	rm -rf $(BIN)
