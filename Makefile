# gxconf — make targets. `make demo` and `make test` are all a newcomer needs.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/.cache/bin
export DENDRITE_BIN_DIR := $(BIN)

.PHONY: all build web demo test deps lint unit fuzz clean deploy-check

all: build

## build: the gxconf binary in bin/, with the self-test page
build: web
	$(GO) build -o bin/gxconf ./cmd/gxconf

## web: the browser call client (web/: npm ci, type check, esbuild) into web/dist,
## which gxconf embeds and serves at /selftest/
web:
	./scripts/deps.sh web
	cd web && npm run --silent typecheck && npm run --silent build

## deps: everything the tests need (Dendrite via go install; system packages via apt where missing)
deps:
	./scripts/deps.sh

## demo: a local Dendrite with gxconf registered; prints what to open and try
demo: deps web
	$(GO) build -o bin/demo ./test/demo
	bin/demo

## test: every test, with the race detector, real peers included. One package at a time
## (-p 1): the TURN and sites tests add veth interfaces to the host for a while, and a
## browser test of another package running meanwhile would gather ICE candidates on them.
test: deps lint web deploy-check
	GXTEST_DEPLOY_REQUIRE_TOOLS=1 $(GO) test -race -count=1 -p 1 -timeout 25m ./...

## deploy-check: the Helm chart checked without Docker: helm lint, kubeconform, Pod Security,
## server-side dry-run against a throwaway etcd + kube-apiserver (deploy/check.sh; the tools
## are built from source once into .cache/deploy-tools, ~10 min cold, seconds warm)
deploy-check:
	./deploy/check.sh

## lint: gofmt and go vet must be clean
lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './node_modules/*')); \
	  if [ -n "$$bad" ]; then echo "gofmt would change: $$bad"; exit 1; fi
	$(GO) vet ./...

## unit: the fast tests only (no homeserver, no browser)
unit:
	$(GO) test -race -short ./...

## fuzz: run each fuzzer for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

clean:
	rm -rf bin .demo
	find web/dist -mindepth 1 ! -name PLACEHOLDER -delete
