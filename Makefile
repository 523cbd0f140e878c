# batfleet — the two set-up commands are `make demo` and `make test`.
GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN           := bin
FUZZTIME      ?= 10s
BENCHCOUNT    ?= 6

.PHONY: all build test test-short bench bench-go bench-h2h bench-fanout lint fuzz demo clean

all: build

build:
	$(GO) build -o $(BIN)/ ./...

# Everything, with the race detector. Integration tests run embedded
# nats-servers in-process and never need the network.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

test-short:
	$(GO) test -short -count=1 ./...

# Benchmarks (no race detector): the package benchmarks, then the head-to-head
# against JetStream pull consumers, which rewrites BENCHMARKS.md. Compare the
# package figures' medians with benchstat:
#   make bench-go > new.txt && go run golang.org/x/perf/cmd/benchstat@latest new.txt
bench: bench-go bench-h2h

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) -timeout 60m ./...

bench-h2h:
	$(GO) run ./integration/h2h --out BENCHMARKS.md

# Idle fan-out against JetStream (≈ 23 minutes): W ∈ {0, 100, 1000} idle
# consumers (and 1000 on connections of their own), a producer at 500 and
# 5,000 appends/s, server processes measured apart; adds or updates its own
# section of BENCHMARKS.md. FANOUT_QUICK=1 make bench-fanout is a
# ≈ 40-second smoke run to stdout.
bench-fanout:
	@if [ "$$FANOUT_QUICK" = 1 ]; then $(GO) run ./integration/fanout; \
	else $(GO) run ./integration/fanout --out BENCHMARKS.md; fi

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed on:"; gofmt -l .; exit 1)

# A short run of every fuzz target.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# The whole fleet on one machine: DEMO_EVENTS=20000 make demo for a quick one.
demo: build
	bash scripts/demo.sh

clean:
	rm -rf $(BIN)
