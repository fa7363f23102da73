# baton — the two commands a new machine needs are `make demo` and `make test`.
GO      ?= go
GOFLAGS ?=
export GOFLAGS

.PHONY: all build demo test test-unix test-modules test-windows vet cross bench fuzz faults soak clean

# Nested modules (their own go.mod, heavier dependencies kept out of the
# core module): vetted for every target OS and race-tested by `make test`.
SUBMODULES = grpcdrain

all: build

build:
	$(GO) build ./...

## demo: upgrade examples/hello under load a few times, then try a broken release
demo:
	$(GO) run ./test/demo

## test: the whole suite: vet for every target OS, the race-enabled tests,
## and the Windows lane under Wine (installed when missing; CI=true fails
## rather than skips when it cannot run)
test: vet test-unix test-modules test-windows

test-unix:
	$(GO) test -race -count=1 -timeout 10m ./...
	@# the proxy's socket calls are other code without the race detector
	@# (internal/proxy/sockio_linux.go)
	$(GO) test -count=1 -timeout 5m ./internal/proxy/

## test-modules: vet and race-test each nested module (grpcdrain: ~30 s,
## of which 20 upgrades of examples/grpc under gRPC load)
test-modules:
	@for m in $(SUBMODULES); do \
		echo "go test ($$m)"; \
		(cd $$m && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 5m ./...) || exit 1; \
	done

test-windows:
	GO=$(GO) bash scripts/wine/lane.sh

vet: cross
	$(GO) vet ./...

## cross: every change must build and vet for linux, windows, darwin and freebsd
## (and Linux on 386 and arm64: some system calls differ by architecture)
cross:
	@for os in linux windows darwin freebsd; do \
		echo "go vet (GOOS=$$os)"; \
		GOOS=$$os GOARCH=amd64 $(GO) vet ./... || exit 1; \
		for m in $(SUBMODULES); do \
			(cd $$m && GOOS=$$os GOARCH=amd64 $(GO) vet ./...) || exit 1; \
		done; \
	done
	@for arch in 386 arm64; do \
		echo "go vet (GOOS=linux GOARCH=$$arch)"; \
		GOOS=linux GOARCH=$$arch $(GO) vet ./... || exit 1; \
	done

## bench: hello under mixed load with an upgrade every 500 ms, then 10,000 idle
## keep-alive clients with an upgrade every 3 s, both beside tableflip, then
## proxy mode's cost (wrk: direct, --proxy http, --proxy tcp, nginx); prints
## the figures (go run ./test/bench -only upgrades|idle|proxy for one block)
bench:
	$(GO) run ./test/bench

## fuzz: every fuzz target, one after the other, for FUZZTIME each (a
## duration, or Nx for N executions: FUZZTIME=1000000x); prints per target
## the executions and the result, and the failing input's file on a crash.
## The default is long enough for >= 1M executions of the slowest target on
## a busy 2-core machine: 1M took from 56 s (FuzzReadHandoff, ~18k/s) to
## 4m39s (FuzzNotifyMsg and FuzzServeConn, ~3.6k/s, socket system calls
## per execution), so 6m leaves a quarter to spare (the whole run: ~54 min).
## `make test` runs the checked-in seed corpora (testdata/fuzz/) as
## ordinary tests.
FUZZTIME ?= 6m
FUZZMINIMIZETIME ?= 10s
FUZZ_TARGETS = \
	./internal/ctl:FuzzReadLine \
	./internal/ctl:FuzzServeConn \
	./internal/handoff:FuzzReadHandoff \
	./internal/handoff:FuzzLinkFrames \
	./internal/handoff:FuzzLinkServe \
	./internal/handoff:FuzzRecvHanded \
	./cmd/baton:FuzzConfigFile \
	./internal/release:FuzzInspect \
	./supervisor:FuzzNotifyMsg \
	./supervisor:FuzzParseNotify

fuzz:
	@fail=0; log=$$(mktemp); \
	printf '%-18s %-20s %10s %12s  %s\n' TARGET PACKAGE TIME EXECUTIONS RESULT; \
	for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg >$$log 2>&1; rc=$$?; \
		last=$$(grep '^fuzz: elapsed:' $$log | tail -1); \
		execs=$$(echo "$$last" | sed -n 's/.*execs: \([0-9]*\).*/\1/p'); \
		took=$$(echo "$$last" | sed -n 's/^fuzz: elapsed: \([^,]*\),.*/\1/p'); \
		if [ $$rc -eq 0 ]; then res=ok; \
		elif grep -q 'Failing input written to' $$log; then res="CRASH: $$(grep -o 'testdata/fuzz/[^ ]*' $$log | head -1)"; fail=1; \
		else res="FAILED (exit $$rc)"; fail=1; fi; \
		printf '%-18s %-20s %10s %12s  %s\n' $$name $$pkg "$${took:--}" "$${execs:-0}" "$$res"; \
		if [ $$rc -ne 0 ]; then tail -40 $$log | sed 's/^/    /'; fi; \
	done; rm -f $$log; exit $$fail

## faults: the fault matrix (bad, truncated and wrong-arch binaries, hang and
## crash before ready, crash in probation and right after the handover, crash
## loop, refuse to exit, supervisor kill -9, upgrade storm, concurrent
## upgrades, disk full, descriptor limit, foreign user, bad state, clock)
## against real processes under POST load, library and baton run; one table,
## exit 1 if a case fails. Linux, as root (tmpfs, prlimit, user nobody).
faults:
	$(GO) run ./test/faults

## soak: SOAK_UPGRADES upgrades back to back under load, library and baton
## run: 0 failed requests; descriptors, goroutines and RSS of the serving
## generation and of the supervisor, first vs last hundred (Linux)
SOAK_UPGRADES ?= 10000
soak:
	$(GO) run ./test/soak -upgrades $(SOAK_UPGRADES)

clean:
	$(GO) clean -testcache
