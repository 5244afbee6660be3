# Satoru: `make run` starts everything in one process; `make test` runs
# every module's tests against real sshd, rsync, sqlite3, restic, NATS and
# the embedded store.
SHELL := /bin/bash
GO    ?= go
TAGS  := ferretdb_no_postgresql,ferretdb_no_mysql
BIN   := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

MODULES := shared services/api services/puller services/scheduler services/snapshotter services/syncer cmd/satoru deploy
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

# bench: the operator benchmark first (the built bin/satoru up with its
# default config, driven over the REST API, against rsync + restic by hand;
# docs/benchmarks.md; one call measures several rounds, so 1x), the fleet
# throughput over delayed links with 1, 2 and 3 worker nodes (docs/scale.md,
# one call measures every node count, so 1x), then the
# in-process backup benchmark as the per-step breakdown, the scale checks
# with 200,000 finished jobs (docs/scale.md; each seeds its history once,
# the tick's seeds it per iteration, so 3x), then every other benchmark at
# its own -benchtime.
bench: tools-test build
	$(GO) test -tags $(TAGS) -run '^$$' -bench Operator -benchtime 1x -timeout 30m -v ./cmd/satoru/internal/operatorbench/ -satoru-bin $(BIN)/satoru
	$(GO) test -tags $(TAGS) -run '^$$' -bench Fleet -benchtime 1x -timeout 60m -v ./cmd/satoru/internal/fleetbench/ -satoru-bin $(BIN)/satoru
	$(GO) test -tags $(TAGS) -run '^$$' -bench BackupVsTools -benchtime 1x -timeout 30m -v ./cmd/satoru/internal/node/
	$(GO) test -tags $(TAGS) -run '^$$' -bench Download1GB -benchtime 1x -timeout 10m ./cmd/satoru/internal/node/
	$(GO) test -tags $(TAGS) -run '^$$' -bench JobList200k -benchtime 50x -timeout 30m -v ./services/api/apiserver/
	$(GO) test -tags $(TAGS) -run '^$$' -bench Tick1000SitesHistory200k -benchtime 3x -timeout 40m -v ./services/scheduler/scheduler/
	$(GO) test -tags $(TAGS) -run '^$$' -bench HistoryPass200k -benchtime 20x -timeout 30m -v ./shared/store/
	$(GO) test -tags $(TAGS) -run '^$$' -bench . -skip 'Operator|Fleet|BackupVsTools|Download1GB|200k' -benchtime 20x -timeout 30m $(PKGS)

clean:
	rm -rf $(BIN)/satoru
