# Two commands for a newcomer:  `make run` (install + the embedded default study)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2

.PHONY: install run test lint report plan clean organism

# Idempotent: re-installs only when pyproject.toml changed. torch is pinned first so pip takes the
# CPU build on machines that have it locally; a GPU box gets the same version with its CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores $(CORES) --report results/report.zip

# Train the default organism with its own rule (organism.shipped set aside) and ship it to resources/organism:
# the trained weights, config, tokenizer and training record with their sha256 hashes (commit them).
organism: $(STAMP)
	$(BIN)/snakemake resources/models/organism/metrics.json --cores $(CORES) --forcerun train_organism \
		--config "organism={shipped: ''}"
	$(BIN)/python -m esn.shipped resources/models/organism resources/organism

test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -ra

# What a config costs before any job: rows, hours per job on DEVICE (h200 | h100 | cpu), disk, and the shard
# counts that keep every job under the SLURM profile's limits. SCALE="meld=13708 msp_podcast=100000" asks about
# corpora not at hand.
CONFIG ?= config/config.yaml
DEVICE ?= h200
SCALE  ?=
plan: $(STAMP)
	$(BIN)/python -m esn.cost --configfile $(CONFIG) --device $(DEVICE) $(foreach s,$(SCALE),--scale $(s))

lint: $(STAMP)
	$(BIN)/snakemake --lint

report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --report results/report.zip

clean:
	rm -rf results logs .snakemake resources/corpora resources/models
