# Satoru: `make run` starts everything in one process; `make test` runs
# every module's tests against real sshd, rsync, sqlite3, restic, NATS and
# the embedded store.
SHELL := /bin/bash
GO    ?= go
TAGS  := ferretdb_no_postgresql,ferretdb_no_mysql
BIN   := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

MODULES := shared services/api services/puller services/scheduler services/snapshotter services/syncer cmd/satoru
PKGS    := $(addsuffix /...,$(addprefix ./,$(MODULES)))
CONFIG  ?=

.PHONY: run up test vet build tools-run tools-test bench clean

build:
	$(GO) build -tags $(TAGS) -o $(BIN)/satoru ./cmd/satoru

tools-run:
	@scripts/install-tools.sh run

tools-test:
	@scripts/install-tools.sh test

run: tools-run build
	$(BIN)/satoru up $(if $(CONFIG),--config $(CONFIG))

vet:
	$(GO) vet -tags $(TAGS) $(PKGS)

test: tools-test vet
	$(GO) test -tags $(TAGS) -count=1 -timeout 14m -p 2 $(PKGS)

bench: tools-test
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -benchtime 20x $(PKGS)

clean:
	rm -rf $(BIN)/satoru
