# lbbench: see README.md. `make bench` measures, `make test` checks.
GO        ?= go
BIN       := bin
RESULTS   ?=
COUNT     ?= 10
DURATION  ?= 1s
WARMUP    ?= 300ms
MODELS    ?=
WORKERS   ?=
SCENARIOS ?= matrix
GENERATORS ?= 1
NET       ?= loopback

BENCH_FLAGS = -count $(COUNT) -duration $(DURATION) -warmup $(WARMUP) -scenarios $(SCENARIOS) -generators $(GENERATORS) -net $(NET) \
	$(if $(RESULTS),-results $(RESULTS)) $(if $(MODELS),-models $(MODELS)) $(if $(WORKERS),-workers $(WORKERS))

.PHONY: all build setup test bench bench-quick bench-peers compare report observe clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Installs nginx, wrk, prometheus and curl from Debian when missing (as
# root), and the Go modules and benchstat through the module proxy.
setup:
	@bench/setup.sh

# -p 1: packages one at a time; their real servers, loads and sysctls
# (tcp_migrate_req) would otherwise meet in the middle of each other.
test: setup build
	@test -z "$$(gofmt -l .)" || { echo "gofmt -l lists files to format:"; gofmt -l .; exit 1; }
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) test -race -count=1 -p 1 ./...

# The main job: the scenario matrix, interleaved, into results/<date>-<host>/.
bench: setup build
	$(GO) run ./bench matrix $(BENCH_FLAGS)

# The same pipeline, small enough for CI (6 samples per cell).
bench-quick: setup build
	$(GO) run ./bench matrix -count 6 -duration 500ms -warmup 200ms -workers $$(nproc) \
		$(if $(RESULTS),-results $(RESULTS)) $(if $(MODELS),-models $(MODELS))

# The peer comparisons, with equal CPU budgets: target vs nginx under wrk
# and at an equal offered load, loadgen vs wrk on nginx.
bench-peers: setup build
	$(GO) run ./bench peers $(if $(RESULTS),-results $(RESULTS)/peers)

compare:
	@test -n "$(OLD)" -a -n "$(NEW)" || { echo "usage: make compare OLD=results/A NEW=results/B" >&2; exit 2; }
	$(GO) run ./bench compare $(OLD) $(NEW)

report:
	@test -n "$(RESULTS)" || { echo "usage: make report RESULTS=results/DIR" >&2; exit 2; }
	$(GO) run ./bench report $(RESULTS)

# A target and a real Prometheus (deploy/prometheus) to watch live; Ctrl-C stops both.
# TARGET_FLAGS go to bin/target, e.g. TARGET_FLAGS="-model shared -workers 4".
observe: setup build
	$(GO) run ./bench observe -- $(TARGET_FLAGS)

clean:
	rm -rf $(BIN)
