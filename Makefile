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

CLUSTER   := deploy/cluster/cluster.sh

TS        := clients/ts

.PHONY: help deps browser-deps up down status run build demo-build browser-test test ts-test lint k8s-validate bench loadtest chaos-short chaos clean cluster-up cluster-down cluster-status cluster-test cluster-smoke

help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-zA-Z0-9_-]*:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Install what is missing: redis-server, Java 17, Maven (apt), nats-server (go install), Cassandra jars (Maven).
	@$(STACK) deps
	@$(GO) mod download

browser-deps: ## Install Debian's chromium (apt-get) if it is missing: the headless browser of the browser tests (deploy/local/browser.sh).
	@deploy/local/browser.sh deps

up: ## Start Redis, NATS (JetStream) and Cassandra on 127.0.0.1 if they are not running; wait until ready.
	@$(STACK) up

down: ## Stop every process the local stack started (and parleyd if make run started it).
	@$(STACK) down

status: ## Say which parts of the local stack run, with their PIDs and ports.
	@$(STACK) status

build: ## Build bin/parleyd.
	@$(GO) build -o $(BIN)/parleyd ./cmd/parleyd

run: deps up build ## Bring up the stack, migrate, and run parleyd with all roles in development mode in the foreground; prints the demo's URL (/demo/, once make demo-build made it) and a token.
	@deploy/local/run.sh $(BIN)/parleyd

# The browser demo (web/demo): its build, served by make run at /demo/ (deploy/local/run.sh
# looks for its index.html; PARLEY_DEV_DEMO_DIR moves it), and its real-browser tests.
DEMO      := web/demo
DEMO_DIST := $(DEMO)/dist

demo-build: ## Build the browser demo into web/demo/dist (make run serves it at /demo/): npm ci when node_modules is missing or the lockfile changed, tsc, esbuild.
	@cd $(DEMO) && if ! sha256sum --status -c node_modules/.parley-lock.sha256 2>/dev/null; then \
	  npm ci --no-audit --no-fund && sha256sum package-lock.json >node_modules/.parley-lock.sha256; fi
	@cd $(DEMO) && npm run --silent build

browser-test: demo-build ## The demo's tests in chromium (Playwright; make browser-deps installs it) against a parleyd in development mode it starts on the running stack.
	@$(GO) build -o $(BIN)/parleyd ./cmd/parleyd
	@PARLEY_ROOT=$(CURDIR); source deploy/local/env.sh; cd $(DEMO) && PARLEY_DEMO_PARLEYD=$(BIN)/parleyd npm test --silent

test: deps browser-deps lint k8s-validate ## Install chromium if missing; start the stack if needed, run all tests (-race), the outage tests (they restart Cassandra), the TypeScript SDK's tests, the browser demo's tests, the fault-injection suite's short profile; stop what it started. (The cluster smoke test is out of it while its sender-FIFO defect stands: make cluster-smoke.)
	@started=$$(mktemp); trap '$(STACK) down --from-file "$$started"; rm -f "$$started"' EXIT; \
	$(STACK) up --started-file "$$started"; \
	PARLEY_ROOT=$(CURDIR); source deploy/local/env.sh; \
	rc=0; $(GO) test $(GOTEST_FLAGS) $(PKGS) || rc=$$?; \
	if [ $$rc -eq 0 ]; then $(GO) test $(GOTEST_FLAGS) -tags outage -run Outage ./cmd/parleyd || rc=$$?; fi; \
	if [ $$rc -eq 0 ]; then $(MAKE) --no-print-directory ts-test || rc=$$?; fi; \
	if [ $$rc -eq 0 ]; then $(MAKE) --no-print-directory browser-test || rc=$$?; fi; \
	if [ $$rc -eq 0 ]; then \
	  $(GO) build -o $(BIN)/parleyd ./cmd/parleyd && $(GO) build -o $(BIN)/parley-chaos ./cmd/parley-chaos && \
	  $(BIN)/parley-chaos --parleyd $(BIN)/parleyd --profile short $(CHAOS_FLAGS) || rc=$$?; \
	fi; \
	exit $$rc

ts-test: ## The TypeScript SDK's tests (clients/ts) against a parleyd it starts on the running stack: npm ci when node_modules is missing or the lockfile changed, tsc, node --test.
	@cd $(TS) && if ! sha256sum --status -c node_modules/.parley-lock.sha256 2>/dev/null; then \
	  npm ci --no-audit --no-fund && sha256sum package-lock.json >node_modules/.parley-lock.sha256; fi
	@$(GO) build -o $(BIN)/parleyd ./cmd/parleyd
	@PARLEY_ROOT=$(CURDIR); source deploy/local/env.sh; cd $(TS) && PARLEY_TS_PARLEYD=$(BIN)/parleyd npm test --silent

# The cluster's chaos load: every message is replicated three times over on this one box, so it
# takes less than the single-node stack (docs/benchmarks.md, "Cost of replication").
CLUSTER_RATE ?= 20

cluster-up: build ## Start the replicated cluster on loopback (3 NATS, 3 Cassandra, Redis + Sentinels, 2 edges, 2 delivery, 2 api, HAProxy); print its URL and a demo token.
	@PARLEY_ROOT=$(CURDIR) $(CLUSTER) up

cluster-down: ## Stop every process of the cluster (its data stays under .parley/cluster).
	@PARLEY_ROOT=$(CURDIR) $(CLUSTER) down

cluster-status: ## One line per cluster node, the Redis primary, HAProxy's rotation and the NATS meta leader.
	@PARLEY_ROOT=$(CURDIR) $(CLUSTER) status

cluster-test: build ## The failover suite on the cluster (18 faults, each kind twice; about 15 min): starts what is not running, stops what it started.
	@$(GO) build -o $(BIN)/parley-chaos ./cmd/parley-chaos
	@PARLEY_ROOT=$(CURDIR) $(BIN)/parley-chaos --parleyd $(BIN)/parleyd --cluster $(CLUSTER) --profile cluster --rate $(CLUSTER_RATE) $(CHAOS_FLAGS)

cluster-smoke: build ## Cluster smoke test (out of make test while its sender-FIFO defect stands; docs/reliability.md): cluster up, chat through HAProxy, a NATS stream-leader kill and an edge kill checked by the checker, cluster down, no process left.
	@$(GO) build -o $(BIN)/parley-chaos ./cmd/parley-chaos
	@running=$$(PARLEY_ROOT=$(CURDIR) $(CLUSTER) status | grep -c ' running ' || true); \
	rc=0; PARLEY_ROOT=$(CURDIR) $(BIN)/parley-chaos --parleyd $(BIN)/parleyd --cluster $(CLUSTER) --profile cluster-smoke --rate $(CLUSTER_RATE) $(CHAOS_FLAGS) || rc=$$?; \
	if [ "$$running" = 0 ]; then \
	  left=$$(PARLEY_ROOT=$(CURDIR) $(CLUSTER) status | grep ' running ' || true); \
	  if [ -n "$$left" ]; then echo "cluster-smoke: processes left behind after the cluster went down:"; echo "$$left"; rc=1; fi; \
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
