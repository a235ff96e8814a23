# The commands of the README. `make repro` and `make test` create the pinned
# environment in .venv first if it is missing or older than requirements.lock.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
VERIFY := --registry sources.yaml --manifests manifests --data-root data --lock dvc.lock
PREFLIGHT := --registry sources.yaml --params params.yaml --downloads downloads --data-root data \
	--local-copies sources.local.yaml
UPSTREAM := --registry sources.yaml --profile full --local-copies sources.local.yaml \
	--mirrors mirrors.local.yaml
PROFILE = $(shell $(BIN)/python -c 'import yaml; print(yaml.safe_load(open("params.yaml"))["profile"])')

.PHONY: env repro sources check-upstream review merge-driver test lint verify miniature lock \
	bench-layout bench-mix bench-images bench-exports bench-review bench-index bench-nearset \
	bench-nearpairs s3-local clean-env

env: $(VENV)/.installed

# uv (pinned in the lock) installs the lock's exact versions, nothing else, in seconds.
$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $$(grep '^uv==' requirements.lock)
	$(BIN)/uv pip sync --quiet --system-certs --python $(BIN)/python requirements.lock
	touch $@

## Build the whole layout and the mixtures (on the embedded miniature by default),
## after the preflight has checked that the disk can hold what will arrive and a
## quick check has marked any damaged image tree for rebuilding.
repro: env
	$(BIN)/python -m llava_data.preflight $(PREFLIGHT) --check-space
	@if [ "$(PROFILE)" = full ]; then $(BIN)/python -m llava_data.check_upstream $(UPSTREAM) \
	  || { rc=$$?; [ $$rc -eq 2 ] || exit $$rc; \
	       echo "some upstreams could not be asked; going on: a fetch that needs one stops with its own error" >&2; }; fi
	$(BIN)/python -m llava_data.verify $(VERIFY) --quick --repair
	$(BIN)/dvc repro

## What every source needs: size, licence, present or not, manual steps, disk
## (of params.yaml's profile; `make sources PROFILE=full` for the real upstream's).
sources: env
	$(BIN)/python -m llava_data.preflight $(PREFLIGHT) --profile $(PROFILE)

## Ask every full-profile source, downloading nothing, whether it is there and the same file
## (exit 1: a build would stop; 2: some upstream could not be asked).
check-upstream: env
	$(BIN)/python -m llava_data.check_upstream $(UPSTREAM) $(ARGS)

## What a change does to the data, against BASE (a commit, branch or tag): the workspace,
## or the commit HEAD=<rev>; review/report.md (also printed) and its charts. Rebuilds nothing.
review: env
	@$(if $(BASE),,$(error name the commit to compare with: make review BASE=<rev>, e.g. BASE=HEAD or BASE=origin/main))
	@$(BIN)/python -m llava_data.review --base $(BASE) $(if $(HEAD),--head $(HEAD)) --out review $(ARGS)

## Register the dvc.lock merge driver (.gitattributes) in this clone's git config.
merge-driver: env
	git config merge.dvc-lock.name "dvc.lock, stage by stage (llava_data/lockmerge.py)"
	git config merge.dvc-lock.driver "$(BIN)/python -m llava_data.lockmerge %O %A %B"

## Run the test suite (lint first: it takes a second).
# a test file per worker, TEST_JOBS at once (each worker builds the miniature it copies from),
# in collection order: the slowest files first (tests/conftest.py)
TEST_JOBS ?= 2

test: env lint
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Check every extracted tree against its manifest (sizes; CRCs with ARGS=--crc).
verify: env
	$(BIN)/python -m llava_data.verify $(VERIFY) $(ARGS)

## Regenerate the embedded miniature and its checksums in sources.yaml.
miniature: env
	$(BIN)/python -m miniature.generate --out miniature/upstream --update-registry sources.yaml

## Re-pin requirements.lock from requirements.in (every package, for Python 3.11).
lock: env
	$(BIN)/uv pip compile --quiet --system-certs --python-version 3.11 --no-header --no-annotate \
	  requirements.in -o requirements.lock

## Benchmarks (figures in the README).
bench-layout: env
	$(BIN)/python -m bench.layout

bench-mix: env
	$(BIN)/python -m bench.mix

bench-exports: env
	$(BIN)/python -m bench.exports --images 200000 --remote

bench-review: env
	$(BIN)/python -m bench.review

bench-images: env
	$(BIN)/python -m bench.images

bench-index: env
	$(BIN)/python -m bench.index --images 4000

bench-nearset: env
	$(BIN)/python -m bench.nearset

bench-nearpairs: env
	$(BIN)/python -m bench.nearpairs --hashes 1500000 --distances 6 8

## A local S3-compatible server (SeaweedFS) for trying the team remote on one machine.
s3-local: env
	mkdir -p .s3-local
	$(BIN)/weed server -dir=.s3-local -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3 -s3.port=8333 \
	  -volume.max=0 -master.volumeSizeLimitMB=1024 > .s3-local/weed.log 2>&1 & pid=$$!; \
	until curl -s http://127.0.0.1:8333/ | grep -q '<Name>llava-data</Name>' \
	  || curl -sf -o /dev/null -X PUT http://127.0.0.1:8333/llava-data; do sleep 1; done; \
	echo "S3 server on http://127.0.0.1:8333 (bucket llava-data); in another shell:"; \
	echo "  .venv/bin/dvc remote modify --local team endpointurl http://127.0.0.1:8333"; \
	echo "  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local"; \
	echo "Ctrl-C stops it."; wait $$pid

clean-env:
	rm -rf $(VENV)
