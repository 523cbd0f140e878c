# batfleet — the two set-up commands are `make demo` and `make test`.
GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN           := bin
FUZZTIME      ?= 10s
BENCHCOUNT    ?= 6

.PHONY: all build test test-short bench bench-go bench-h2h bench-fanout bench-groups lint fuzz demo chaos clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# Everything, with the race detector. Integration tests run embedded
# nats-servers in-process and never need the network.
# The groupbench harness is a module of its own: vetted and unit-tested
# here (-short) so that it keeps building; `make bench-groups` runs it.
test:
	$(GO) vet ./...
	cd integration/groupbench && $(GO) vet ./... && $(GO) test -short -count=1 ./...
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

# Consumer groups (≈ 20 minutes): batfleet groups vs synadia-io/orbit.go
# pcgroups v0.2.2 vs plain JetStream (N pullers on one durable), every member
# a process of its own: scaling with N ∈ {1, 2, 4, 8} on GROUPS_EVENTS loaded
# events (default 200,000: pcgroups drains ≈ 3–4k events/s on a 2-core
# machine, so the brief's 1,000,000 would take over an hour), then 20 kill -9
# and 10 leave + join cycles on a live stream; adds or updates its own
# section of BENCHMARKS.md. The harness is a module of its own
# (integration/groupbench/go.mod) so the main module keeps its four
# dependencies. GROUPS_QUICK=1 make bench-groups is a ≈ 3-minute smoke run
# to stdout.
GROUPS_EVENTS ?= 200000
bench-groups:
	@if [ "$$GROUPS_QUICK" = 1 ]; then cd integration/groupbench && $(GO) run .; \
	else cd integration/groupbench && GROUPS_EVENTS=$(GROUPS_EVENTS) $(GO) run . --out ../../BENCHMARKS.md; fi

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	cd integration/groupbench && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed on:"; gofmt -l .; exit 1)

# Every fuzz target, FUZZTIME each (default 10s; the reliability run is
# `make fuzz FUZZTIME=10m`). What is kept in the repository, per target, in
# its package's testdata/fuzz/FuzzXxx/ (go test runs those files as seeds):
#   - inputs that failed: go test -fuzz writes them there itself;
#   - part of the corpus the fuzzer grew: it keeps in $(go env GOCACHE)/fuzz
#     (not in the repository) only the inputs that reached new coverage when
#     found; after each run the smallest of them, each at most
#     FUZZKEEPBYTES bytes, are copied next to the seeds until the target's
#     directory holds FUZZKEEP files. Files are named by content hash, so a
#     run never duplicates one; review and commit what it adds.
# FUZZRUN picks targets by an extended regular expression on their names
# (`make fuzz FUZZRUN='^FuzzPull'`), to spread a long run over sittings.
FUZZRUN       ?= .
FUZZKEEP      ?= 50
FUZZKEEPBYTES ?= 4096
fuzz:
	@cache="$$($(GO) env GOCACHE)/fuzz"; \
	for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' | grep -E -- '$(FUZZRUN)'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	    keep="$$dir/testdata/fuzz/$$f"; found="$$cache/$$pkg/$$f"; \
	    [ -d "$$found" ] || continue; \
	    mkdir -p "$$keep"; n=$$(ls "$$keep" | wc -l); added=0; \
	    for c in $$(ls -Sr "$$found"); do \
	      [ $$n -lt $(FUZZKEEP) ] || break; \
	      [ -e "$$keep/$$c" ] && continue; \
	      [ $$(wc -c < "$$found/$$c") -le $(FUZZKEEPBYTES) ] || continue; \
	      cp "$$found/$$c" "$$keep/$$c"; n=$$((n+1)); added=$$((added+1)); \
	    done; \
	    echo "   kept $$added new corpus files in $$keep ($$n in all)"; \
	    rmdir "$$keep" 2>/dev/null || true; \
	  done; \
	done

# The whole fleet on one machine: DEMO_EVENTS=20000 make demo for a quick one.
demo: build
	bash scripts/demo.sh

# A seeded chaos run of the whole fleet as real processes (≈ 10 minutes for
# 200 faults): an external nats-server, the writer, plain workers, group
# members and producers, each behind a fault proxy; SIGKILL and
# SIGSTOP/SIGCONT of every kind of process, server restarts, latency,
# resets, blackholes, a slow reader, a full disk under the writer (a tmpfs
# where the run may mount one). Then a checker reads the journal, every
# delivery log and the whole checkpoint history. The seed is printed first
# (CHAOS_SEED=0: a random one), the summary line last; a failure replays
# with make chaos CHAOS_FAULTS=N CHAOS_SEED=S. The short run is part of
# make test (TestCHAOS01_Short).
CHAOS_FAULTS ?= 200
CHAOS_SEED   ?= 0
chaos:
	$(GO) run ./integration/chaos --faults $(CHAOS_FAULTS) --seed $(CHAOS_SEED)

clean:
	rm -rf $(BIN)
