# Parley: `make run` brings up the local stack and parleyd; `make test` runs every test against
# the real stack. Run `make help` for the list. Ports and versions: deploy/local/env.sh.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
STACK     := deploy/local/stack.sh
STATE_DIR ?= $(CURDIR)/.parley
BIN       := $(CURDIR)/bin
GOTEST_FLAGS ?= -race -count=1 -timeout 30m

export PARLEY_STATE_DIR := $(STATE_DIR)

# Every package of the workspace's modules (go.work: the server at the root, protocol, and
# clients/go): `./...` stops at a nested module's go.mod even in workspace mode, so the targets
# that mean "all packages" name each module's tree, as ./... ./protocol/... and so on.
PKGS = $(patsubst $(CURDIR)%,.%/...,$(shell $(GO) list -m -f '{{.Dir}}'))

.PHONY: help deps up down status run build test lint k8s-validate bench loadtest chaos-short chaos clean

help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-zA-Z0-9_-]*:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Install what is missing: redis-server, Java 17, Maven (apt), nats-server (go install), Cassandra jars (Maven).
	@$(STACK) deps
	@$(GO) mod download

up: ## Start Redis, NATS (JetStream) and Cassandra on 127.0.0.1 if they are not running; wait until ready.
	@$(STACK) up

down: ## Stop every process the local stack started (and parleyd if make run started it).
	@$(STACK) down

status: ## Say which parts of the local stack run, with their PIDs and ports.
	@$(STACK) status

build: ## Build bin/parleyd.
	@$(GO) build -o $(BIN)/parleyd ./cmd/parleyd

run: deps up build ## Bring up the stack, migrate, and run parleyd with all roles in the foreground.
	@deploy/local/run.sh $(BIN)/parleyd

test: deps lint k8s-validate ## Start the stack if needed, run all tests (-race), the outage tests (they restart Cassandra) and the fault-injection suite's short profile, stop what it started.
	@started=$$(mktemp); trap '$(STACK) down --from-file "$$started"; rm -f "$$started"' EXIT; \
	$(STACK) up --started-file "$$started"; \
	PARLEY_ROOT=$(CURDIR); source deploy/local/env.sh; \
	rc=0; $(GO) test $(GOTEST_FLAGS) $(PKGS) || rc=$$?; \
	if [ $$rc -eq 0 ]; then $(GO) test $(GOTEST_FLAGS) -tags outage -run Outage ./cmd/parleyd || rc=$$?; fi; \
	if [ $$rc -eq 0 ]; then \
	  $(GO) build -o $(BIN)/parleyd ./cmd/parleyd && $(GO) build -o $(BIN)/parley-chaos ./cmd/parley-chaos && \
	  $(BIN)/parley-chaos --parleyd $(BIN)/parleyd --profile short $(CHAOS_FLAGS) || rc=$$?; \
	fi; \
	exit $$rc

STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: ## gofmt, go vet and staticcheck.
	@unformatted=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null || true); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@$(GO) vet $(PKGS)
	@$(GO) vet -tags outage ./cmd/parleyd
	@$(GO) run $(STATICCHECK) $(PKGS)

k8s-validate: ## Check deploy/k8s with kubeconform -strict and against parleyd's flags (installs its tools into the cache).
	@deploy/k8s/validate.sh

bench: deps up ## Run the Go benchmarks (figures go to docs/benchmarks.md).
	@$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

loadtest: ## One-minute chat load test against the parleyd of `make run` (run it in another terminal), at PARLEY_LISTEN_ADDR like parleyd.
	@$(GO) build -o $(BIN)/parley-loadtest ./cmd/parley-loadtest
	@PARLEY_AUTH_HS256_SECRET=$${PARLEY_AUTH_HS256_SECRET:-$$(cat $(STATE_DIR)/dev-hs256-secret 2>/dev/null)} \
	  $(BIN)/parley-loadtest chat --users 200 --rate 200 --duration 60s --json $(STATE_DIR)/loadtest-chat.json --html $(STATE_DIR)/loadtest-chat.html
	@echo "result: $(STATE_DIR)/loadtest-chat.json and $(STATE_DIR)/loadtest-chat.html (open it in a browser; it needs no network)"

CHAOS_FLAGS ?=
chaos-short: ## Fault-injection suite, short profile (under 10 min, 6 Cassandra SIGKILLs; also the last phase of make test; docs/reliability.md).
	@$(GO) build -o $(BIN)/parleyd ./cmd/parleyd
	@$(GO) build -o $(BIN)/parley-chaos ./cmd/parley-chaos
	@PARLEY_ROOT=$(CURDIR); source deploy/local/env.sh; $(BIN)/parley-chaos --parleyd $(BIN)/parleyd --profile short $(CHAOS_FLAGS)

chaos: ## Fault-injection suite, long profile (66 faults, each kind killed and stopped 5 times; about 25 min).
	@$(GO) build -o $(BIN)/parleyd ./cmd/parleyd
	@$(GO) build -o $(BIN)/parley-chaos ./cmd/parley-chaos
	@PARLEY_ROOT=$(CURDIR); source deploy/local/env.sh; $(BIN)/parley-chaos --parleyd $(BIN)/parleyd --profile long $(CHAOS_FLAGS)

clean: down ## Stop the stack and delete its state (.parley/) and bin/.
	rm -rf $(STATE_DIR) $(BIN)
