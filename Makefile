# Two commands for a newcomer:  `make run` (install + the embedded default study)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2

.PHONY: install run test lint report clean organism

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

lint: $(STAMP)
	$(BIN)/snakemake --lint

report: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --report results/report.zip

clean:
	rm -rf results logs .snakemake resources/corpora resources/models
