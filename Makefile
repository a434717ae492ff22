# lbbench: see README.md. `make bench` measures, `make test` checks.
GO      ?= go
BIN     := bin
RESULTS ?=

.PHONY: all build setup test test-short bench bench-quick compare clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

setup:
	@bench/setup.sh

test: setup build
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

clean:
	rm -rf $(BIN)
