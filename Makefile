# kit: every command a user runs. `make` alone lists them.
COMP ?= digits
FOLD ?= 0
FILE ?=
TOP ?= 10
RUN ?=
RUNS ?=
MSG ?=
SLUG ?=
METRIC ?=
GPUS ?= 1
SET ?=
SUBMIT ?=
GPU ?=
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KIT := $(BIN)/kit
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast lint list config download files leaderboard folds duplicates train train-parallel resume lr-find predict submit ledger new

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  (COMP=name picks the competition, e.g. make train COMP=dog-breed; default COMP=$(COMP))"

# The venv is made once and re-installed only when pyproject.toml changes. torch is pinned here because
# pip finds these releases on this project's machines' disks; elsewhere pip fetches them from PyPI.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the kit (once; again when pyproject.toml changes)

demo: $(STAMP) ## Offline end to end on an embedded demo (COMP=digits, digits-tags, digits-value, digits-grade): download, train, predict, score
	$(KIT) download $(COMP)
	$(KIT) train $(COMP)
	$(KIT) predict $(COMP)
	$(KIT) submit $(COMP) -m "make demo"

test: $(STAMP) ## Run the test suite (CPU, tiny data, offline)
	$(BIN)/pytest tests

test-fast: $(STAMP) ## Run the tests that train no model for long (skips those marked slow)
	$(BIN)/pytest tests -m "not slow"

lint: $(STAMP) ## Check style with ruff
	$(BIN)/ruff check kit tests scripts competitions

list: $(STAMP) ## List competitions and their status
	$(KIT) list

config: $(STAMP) ## Print COMP's resolved config: every key, its value and its source (default, toml, SET=)
	$(KIT) config $(COMP) $(foreach s,$(SET),--set $(s))

download: $(STAMP) ## Download COMP's files into data/raw/COMP (once; resumes; FILE=name for one file; HAND_FILLED=1 marks files you put there)
	$(KIT) download $(COMP) $(if $(FILE),--file $(FILE)) $(if $(HAND_FILLED),--hand-filled)

files: $(STAMP) ## List COMP's files on Kaggle and their sizes
	$(KIT) files $(COMP)

leaderboard: $(STAMP) ## Top TOP=10 of COMP's public leaderboard and your team's rank
	$(KIT) leaderboard $(COMP) --top $(TOP)

folds: $(STAMP) ## Make and show COMP's cross-validation folds
	$(KIT) folds $(COMP)

duplicates: $(STAMP) ## Find COMP's near-duplicate photos (within train, train/test)
	$(KIT) duplicates $(COMP)

train: $(STAMP) ## Train COMP (FOLD=0|all|full, SEEDS=N models per fold or with full, SET="train.epochs=2 ..."; GPUS=N uses torchrun)
ifeq ($(GPUS),1)
	$(KIT) train $(COMP) --fold $(FOLD) $(if $(SEEDS),--seeds $(SEEDS)) $(foreach s,$(SET),--set $(s))
else
	$(BIN)/torchrun --standalone --nproc_per_node=$(GPUS) -m kit train $(COMP) --fold $(FOLD) $(foreach s,$(SET),--set $(s))
endif

train-parallel: $(STAMP) ## Train COMP's folds side by side, one process (GPU) each: NPROC=N (default 2), SET=...
	$(BIN)/torchrun --standalone --nproc_per_node=$(or $(NPROC),2) -m kit train $(COMP) --fold all --parallel folds $(foreach s,$(SET),--set $(s))

resume: $(STAMP) ## Continue COMP's interrupted run (newest, or RUN=) from its last completed epoch
	$(KIT) train $(COMP) --resume $(if $(RUN),--run $(RUN))

lr-find: $(STAMP) ## Learning-rate finder for COMP (STAGE=N, RUN= to start from a run's weights)
	$(KIT) lr-find $(COMP) --stage $(or $(STAGE),0) $(if $(RUN),--run $(RUN)) $(foreach s,$(SET),--set $(s))

predict: $(STAMP) ## Predict COMP's test set with RUN (default: newest) and write the submission
	$(KIT) predict $(COMP) $(RUN)

submit: $(STAMP) ## Train and predict if needed, check, then upload COMP's submission (MSG="...")
	$(KIT) submit $(COMP) $(if $(RUN),--run $(RUN)) -m "$(MSG)"

.PHONY: notebook
notebook: $(STAMP) ## Code competitions: push a Kaggle notebook predicting with RUN (default: newest); SUBMIT=1 submits (MSG=), SUBMIT_ONLY=1 submits the notebook that ran already; LOCAL=1 rehearses it here, offline, with a time budget (FORCE=1 pushes over it)
	$(KIT) notebook $(COMP) $(if $(RUN),--run $(RUN)) $(if $(LOCAL),--local) $(if $(FORCE),--force) $(if $(filter 0,$(GPU)),--no-gpu) $(if $(SUBMIT),--submit -m "$(MSG)") $(if $(SUBMIT_ONLY),--submit-only -m "$(MSG)") $(foreach s,$(SET),--set $(s))

.PHONY: report runs ensemble config
report: $(STAMP) ## Write COMP's HTML report for RUN (default: newest) into its run folder
	$(KIT) report $(COMP) $(RUN)

runs: $(STAMP) ## Table of COMP's runs: CV score, time and the settings that differ
	$(KIT) runs $(COMP)

ensemble: $(STAMP) ## Blend COMP's RUNS="a b" on OOF (fitted weights, calibration), write the submission
	$(KIT) ensemble $(COMP) $(RUNS)

ledger: $(STAMP) ## Refresh COMP's leaderboard scores from Kaggle; show them next to CV
	$(KIT) ledger $(COMP)

new: $(STAMP) ## Fork for a new competition: make new COMP=name SLUG=kaggle-slug [METRIC=f1_micro] [FROM_RAW=1] [LIKE=cats-vs-dogs]
	$(KIT) new $(COMP) $(if $(SLUG),--kaggle $(SLUG)) $(if $(METRIC),--metric $(METRIC)) $(if $(FROM_RAW),--from-raw) $(if $(LIKE),--like $(LIKE))
