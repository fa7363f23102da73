# baton — the two commands a new machine needs are `make demo` and `make test`.
GO      ?= go
GOFLAGS ?=
export GOFLAGS

.PHONY: all build demo test test-unix test-windows vet cross bench clean

all: build

build:
	$(GO) build ./...

## demo: upgrade examples/hello under load a few times, then try a broken release
demo:
	$(GO) run ./test/demo

## test: the whole suite: vet for every target OS, the race-enabled tests,
## and the Windows lane under Wine (installed when missing; CI=true fails
## rather than skips when it cannot run)
test: vet test-unix test-windows

test-unix:
	$(GO) test -race -count=1 -timeout 10m ./...

test-windows:
	GO=$(GO) bash scripts/wine/lane.sh

vet: cross
	$(GO) vet ./...

## cross: every change must build and vet for linux, windows, darwin and freebsd
cross:
	@for os in linux windows darwin freebsd; do \
		echo "go vet (GOOS=$$os)"; \
		GOOS=$$os GOARCH=amd64 $(GO) vet ./... || exit 1; \
	done

## bench: hello under mixed load with an upgrade every 500 ms; prints the figures
bench:
	$(GO) run ./test/bench

clean:
	$(GO) clean -testcache
