# plantgate build, test and packaging targets. `make help` lists them.

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
# Package versions must start with a digit: untagged builds become
# 0.0.0~git<hash>; "-" (git describe's separators, -dirty) becomes "+",
# which .deb and .rpm versions both allow.
PKG_VERSION ?= $(shell echo "$(VERSION)" | sed -E 's/^v//; /^[0-9]+\./!s/^/0.0.0~git/; s/-/+/g')
# Where build-all and package write.
DIST ?= dist
PKG      = github.com/plantgate/plantgate
LDFLAGS  = -s -w -X $(PKG)/internal/buildinfo.Version=$(VERSION) -X $(PKG)/internal/buildinfo.Commit=$(COMMIT) -X $(PKG)/internal/buildinfo.Date=$(DATE)
GOBUILD  = CGO_ENABLED=0 go build -trimpath -mod=readonly -ldflags "$(LDFLAGS)"
TOOLS    = $(CURDIR)/.tools
GOBIN_TOOLS = $(TOOLS)/bin
GOLANGCI_VERSION = v2.15.0
GOFUMPT_VERSION  = v0.9.2
NFPM_VERSION     = v2.45.2
# Test timeout for the whole suite; the suite itself is kept well under it.
TEST_TIMEOUT ?= 15m

export PATH := $(GOBIN_TOOLS):$(PATH)
export PLANTGATE_TOOLS := $(TOOLS)

.PHONY: help build build-all test test-short test-integration bench e2e e2e-long fuzz lint fmt vet tidy-check tools package package-test check-systemd demo clean

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## static binaries in bin/ (plantgate, fo-emulator)
	@mkdir -p bin
	$(GOBUILD) -o bin/plantgate ./cmd/plantgate
	@if [ -d cmd/fo-emulator ] && ls cmd/fo-emulator/*.go >/dev/null 2>&1; then $(GOBUILD) -o bin/fo-emulator ./cmd/fo-emulator; fi
	@ls -l bin/ && file bin/plantgate 2>/dev/null || true

build-all: ## cross-compile static plantgate binaries for amd64, arm64 and armv7 into $(DIST)
	@mkdir -p $(DIST)
	GOOS=linux GOARCH=amd64 $(GOBUILD) -o $(DIST)/plantgate-linux-amd64 ./cmd/plantgate
	GOOS=linux GOARCH=arm64 $(GOBUILD) -o $(DIST)/plantgate-linux-arm64 ./cmd/plantgate
	GOOS=linux GOARCH=arm GOARM=7 $(GOBUILD) -o $(DIST)/plantgate-linux-armv7 ./cmd/plantgate

tools: ## install the real peers the tests use (mosquitto, Azurite; node-opcua too, unused until an OPC UA source exists)
	@NFPM_VERSION=$(NFPM_VERSION) scripts/install-test-tools.sh "$(TOOLS)"

test: tools ## all tests with the race detector, against real peers, then the end-to-end fault suite
	go test -race -count=1 -timeout $(TEST_TIMEOUT) $$(go list ./... | grep -v '/internal/e2e$$')
	@# The fault suite runs its processes on its own, not beside other packages' timing tests.
	$(MAKE) --no-print-directory e2e

test-short: ## unit tests only, no external peers
	go test -race -short -count=1 ./...

test-integration: tools ## only the TestIntegration* tests
	go test -race -count=1 -timeout $(TEST_TIMEOUT) -run Integration ./...

bench: tools ## every benchmark, then one table of figures beside their same-run baselines (bench.md); raw output in bench.out
	@go test -p 1 -run '^$$' -bench . -skip '^BenchmarkIngest(Live|Backlog)$$' -benchtime 3s -timeout 60m ./... > bench.out 2>&1; rc=$$?; \
	GOGC=50 go test -run '^$$' -bench '^BenchmarkIngest(Live|Backlog)$$' -benchtime 300000x -timeout 20m ./plugins/inputs/mqtt/ >> bench.out 2>&1 || rc=$$?; \
	go run ./scripts/benchtable -o bench.md < bench.out 2>/dev/null; exit $$rc
	go test -count=1 -run TestCrashSafetyUnderSIGKILL -timeout 30m ./internal/queue/ -crash.kills=500 -v | tail -3 | tee -a bench.out

e2e: tools ## the end-to-end fault suite alone (real processes; also part of make test)
	@PLANTGATE_REQUIRE_LAZYFS=1 go test -count=1 -timeout 15m -v -run 'TestE2E$$' ./internal/e2e/ > e2e.out 2>&1; rc=$$?; grep -E -A14 'e2e: |^--- FAIL|^FAIL|^ok' e2e.out; exit $$rc

e2e-long: tools ## long soak and fault runs (not part of make test)
	@PLANTGATE_REQUIRE_LAZYFS=1 PLANTGATE_E2E_KILLS=200 PLANTGATE_E2E_CUTS=100 go test -count=1 -timeout 90m -v -run 'TestE2E$$' ./internal/e2e/ > e2e-long.out 2>&1; rc=$$?; grep -E -A14 'e2e: |^--- FAIL|^FAIL|^ok' e2e-long.out; exit $$rc
	PLANTGATE_LONG=1 go test -race -count=1 -timeout 60m -run 'Long' ./...
	PLANTGATE_REQUIRE_LAZYFS=1 go test -count=1 -timeout 30m -run 'PowerCut' ./internal/queue/ -powercut.cuts=200
	PLANTGATE_LONG=1 PLANTGATE_REQUIRE_LAZYFS=1 go test -count=1 -timeout 40m -run 'PowerCut|MosquittoSIGKILL' ./plugins/inputs/mqtt/ -powercut.cuts=100

fuzz: ## run every fuzz target for FUZZTIME (default 30s) each
	@scripts/fuzz-all.sh $${FUZZTIME:-30s}

lint: ## golangci-lint (installed through the Go module proxy)
	@test -x $(GOBIN_TOOLS)/golangci-lint || GOBIN=$(GOBIN_TOOLS) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	$(GOBIN_TOOLS)/golangci-lint run ./...

fmt: ## gofumpt the tree
	@test -x $(GOBIN_TOOLS)/gofumpt || GOBIN=$(GOBIN_TOOLS) go install mvdan.cc/gofumpt@$(GOFUMPT_VERSION)
	$(GOBIN_TOOLS)/gofumpt -w $$(git ls-files '*.go')

vet: ## go vet
	go vet ./...

tidy-check: ## go.mod and go.sum are tidy
	go mod tidy && git diff --exit-code go.mod go.sum

# make package: GOARCH[v] of build-all = nfpm's arch (armhf in .deb, armv7hl in .rpm).
PKG_ARCHES = amd64=amd64 arm64=arm64 armv7=arm7

package: build-all ## .deb and .rpm for amd64, arm64 and armv7 into $(DIST), with nfpm
	@test -x $(GOBIN_TOOLS)/nfpm || GOBIN=$(GOBIN_TOOLS) go install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
	@rm -f $(DIST)/plantgate*.deb $(DIST)/plantgate*.rpm
	@set -e; for a in $(PKG_ARCHES); do for p in deb rpm; do \
	  VERSION=$(PKG_VERSION) ARCH=$${a#*=} PLANTGATE_BINARY=$(DIST)/plantgate-linux-$${a%%=*} \
	    $(GOBIN_TOOLS)/nfpm pkg -f packaging/nfpm.yaml -p $$p -t $(DIST)/; \
	done; done
	@ls -l $(DIST)/plantgate*.deb $(DIST)/plantgate*.rpm

package-test: ## build the packages once and check them (dpkg-deb -c, rpm -qlp, file)
	@NFPM_VERSION=$(NFPM_VERSION) scripts/install-test-tools.sh "$(TOOLS)"
	$(MAKE) package DIST=$(CURDIR)/dist
	PLANTGATE_DIST=$(CURDIR)/dist go test -count=1 ./packaging/

demo: ## run fo-emulator, plantgate and the MES simulator together (Ctrl-C stops)
	@scripts/demo.sh

check-systemd: ## systemd-analyze verify (needs /usr/bin/plantgate) and security (exposure at most 2.0) of the unit
	@command -v systemd-analyze >/dev/null || { echo "systemd-analyze not installed (Debian package systemd)"; exit 1; }
	@if [ -x /usr/bin/plantgate ]; then systemd-analyze verify systemd/plantgate.service; \
	  else echo "verify skipped: no /usr/bin/plantgate (TestPackages verifies the packaged unit)"; fi
	@out=$$(systemd-analyze security --offline=yes --threshold=20 systemd/plantgate.service); rc=$$?; \
	  echo "$$out" | tail -1; exit $$rc

clean: ## remove build outputs
	rm -rf bin dist bench.out
