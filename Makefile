# speechstack — every target sets itself up: `make demo` and `make test` work on a fresh clone.
# Variables (override on the command line, e.g. `make train-fold MODEL=cnn FOLD=2`):
TASK        ?= speech_commands
ASR_TASKS   := asr bengali_ai transcripts
MODEL       ?= $(if $(filter $(ASR_TASKS),$(TASK)),ctc,cnn)
FOLD        ?= 0
DATA        ?= data/$(TASK)
CONFIG      ?= configs/$(TASK)/$(MODEL).yaml
EXP         ?=
EXPERIMENTS ?=
SET         ?=
FORCE       ?=
DRY_RUN     ?=
FILE        ?=
MSG         ?=
SPEAKERS    ?=
AUDIO       ?=
SOURCE      ?=
OUT         ?=
ANSWERS     ?=
NPROC       ?=
FAMILIES    ?= cnn convs2s lstm gru wav2vec2 ast whisper
TRIALS      ?=
WORKERS     ?= 1
STORAGE     ?=
PORT        ?= 8080
BENCH_ARGS  ?=
NO_TTA      ?=
STRICT      ?=
RUNTIME     ?= torch
QUANTIZE    ?=
FOLDS       ?=
TEACHER     ?=
PLOT        ?=
PRESET      ?= cpu
SIZE        ?=
TEST_JOBS   ?= 2
PYTHON      ?= python3

space  := $(subst ,, )
comma  := ,
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CLI    := $(BIN)/speechstack
# NPROC=n: data-parallel training, one process per GPU (torchrun; gloo on CPU)
TRAIN  := $(if $(NPROC),$(BIN)/torchrun --standalone --nproc_per_node=$(NPROC) -m speechstack.cli,$(CLI))
COMMON := --config $(CONFIG) --data $(DATA) $(if $(EXP),--experiment $(EXP)) $(foreach s,$(SET),--set $(s))
# STORAGE=postgresql://user:password@host/db: a shared Optuna storage (default studies/<task>.db)
STORE  := $(if $(STORAGE),--storage '$(STORAGE)')

.DEFAULT_GOAL := help
.PHONY: solution help install data-demo folds train-fold train stack report predict export distill spot leaderboard bench bench-models submission submit pseudo demo test test-all lint clean clean-tmp tune best-config dashboard dashboard-screenshot

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'
	@echo "  variables: TASK=$(TASK) (speech_commands ravdess crema_d sentiment) MODEL=$(MODEL) FOLD=$(FOLD) DATA=$(DATA)"
	@echo "             EXP= EXPERIMENTS= SET='key=value ...' NPROC= FORCE=1 DRY_RUN=1 SPEAKERS= (demo size)"
	@echo "  predict:   AUDIO=dir SOURCE= (default the stack) OUT=file.csv ANSWERS=path,label.csv NO_TTA=1 STRICT=1"
	@echo "  solution:  PRESET=cpu|gpu (configs/TASK/solution-PRESET.yaml) DATA= SET="
	@echo "  pseudo:    SOURCE= (default the stack) SET='pseudo.threshold=0.95 pseudo.round=2 pseudo.max_share=0.5'"
	@echo "  tuning:    TRIALS= (default tune.trials) WORKERS=$(WORKERS) STORAGE=postgresql://... PORT=$(PORT)"

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## create .venv with the pinned dependencies (requirements.lock) and the package

data-demo: $(STAMP) ## generate TASK's demo dataset in DATA (its real layout, espeak-ng voices) unless present
	@if [ -d "$(DATA)" ] && [ -n "$$(ls -A $(DATA))" ]; then echo "$(DATA) exists; keeping it (delete it to regenerate)"; \
	else $(CLI) synth --task $(TASK) --out $(DATA) $(if $(SPEAKERS),--speakers $(SPEAKERS)); fi

folds: $(STAMP) ## write folds/<task>.csv (written once; FORCE=1 rewrites)
	$(CLI) folds $(COMMON) $(if $(FORCE),--force)

train-fold: $(STAMP) ## train fold FOLD of MODEL: runs/<task>/<experiment>/fold<k>/
	$(TRAIN) train-fold $(COMMON) --fold $(FOLD)

train: $(STAMP) ## train every fold of MODEL (finished folds skipped; on a CPU several at once)
	$(TRAIN) train $(COMMON)

pretrain: $(STAMP) ## wav2vec2 pre-trained from scratch on AUDIO (default data/asr/clips), SIZE=tiny|small|medium|base: runs/pretrain/wav2vec2-<size>/ (loads as model.params.pretrained)
	$(CLI) pretrain --config configs/pretrain/wav2vec2.yaml --audio $(or $(AUDIO),data/asr/clips) $(if $(SIZE),--size $(SIZE)) $(foreach s,$(SET),--set $(s))

stack: $(STAMP) ## stack EXPERIMENTS (default stack.experiments): LightGBM, their mean and each one scored on the shifted OOF rows; the best is kept
	$(CLI) stack $(COMMON) $(if $(EXPERIMENTS),--experiments $(EXPERIMENTS))

report: $(STAMP) ## report.md + confusion.png for EXPERIMENTS (default every run of TASK) and the stack
	$(CLI) report $(COMMON) $(if $(EXPERIMENTS),--experiments $(EXPERIMENTS))

predict: $(STAMP) ## CSV of label + probabilities for every audio file in AUDIO, from SOURCE (default the stack)
	$(CLI) predict $(COMMON) --audio $(AUDIO) $(if $(SOURCE),--source $(SOURCE)) $(if $(OUT),--out $(OUT)) $(if $(ANSWERS),--answers $(ANSWERS)) $(if $(NO_TTA),--no-tta) $(if $(STRICT),--strict) --runtime $(RUNTIME)

export: $(STAMP) ## MODEL's fold models (all trained) as one ONNX graph, waveform in, label probabilities out: runs/<task>/<experiment>/export/model.onnx; QUANTIZE=static|dynamic adds model.int8.onnx
	$(CLI) export $(COMMON) $(if $(QUANTIZE),--quantize $(QUANTIZE)) $(if $(NO_TTA),--no-tta) $(if $(FOLDS),--folds $(FOLDS))

spot: $(STAMP) ## keywords in AUDIO (a long recording or a folder of them) by MODEL's run (EXP=, RUNTIME=onnx) or SOURCE= (a stack: its members combined): a CSV of detections (+ PLOT=1: a PNG per file; ANSWERS=: precision/recall)
	$(CLI) spot $(COMMON) $(AUDIO) --runtime $(RUNTIME) $(if $(SOURCE),--source $(SOURCE)) $(if $(OUT),--out $(OUT)) $(if $(PLOT),--plot) $(if $(ANSWERS),--answers $(ANSWERS))

distill: $(STAMP) ## train configs/TASK/student.yaml on the soft labels of TEACHER (default: its train.distill.teacher) on every fold, then export fold 0 (or FOLDS=) with its views, int8: the file to ship
	$(TRAIN) train --config configs/$(TASK)/student.yaml --data $(DATA) $(if $(TEACHER),--set train.distill.teacher=$(TEACHER)) $(foreach s,$(SET),--set $(s))
	$(CLI) export --config configs/$(TASK)/student.yaml --data $(DATA) $(if $(TEACHER),--set train.distill.teacher=$(TEACHER)) $(foreach s,$(SET),--set $(s)) --quantize static --folds $(or $(FOLDS),0)

leaderboard: $(STAMP) ## table of every experiment of TASK: CV accuracy, parameters, train time, inference speed
	$(CLI) leaderboard $(COMMON)

bench-models: $(STAMP) ## train every family in FAMILIES on all folds of the demo data, print the table, stack them all
	$(MAKE) --no-print-directory data-demo
	@[ -f folds/$(TASK).csv ] || $(MAKE) --no-print-directory folds
	@for model in $(FAMILIES); do $(MAKE) --no-print-directory train MODEL=$$model || exit 1; done
	$(CLI) leaderboard $(COMMON)
	$(CLI) stack $(COMMON) --experiments $(subst $(space),$(comma),$(strip $(FAMILIES)))

submission: $(STAMP) ## write submissions/<task>-<time>-cv<score>.csv from the stack's kept source (or SOURCE=); RUNTIME=onnx predicts the test set again with the exported models
	$(CLI) submission $(COMMON) $(if $(SOURCE),--source $(SOURCE)) --runtime $(RUNTIME)

submit: $(STAMP) ## upload the newest submission (or FILE) with the kaggle CLI; DRY_RUN=1 prints it
	$(CLI) submit $(if $(FILE),--file $(FILE)) $(if $(MSG),--message "$(MSG)") $(if $(DRY_RUN),--dry-run)

pseudo: $(STAMP) ## confident test clips of SOURCE (default the stack) -> runs/<task>/pseudo/round<r>.csv for the next round
	$(CLI) pseudo $(COMMON) $(if $(SOURCE),--set pseudo.source=$(SOURCE))

solution: $(STAMP) ## the recipe in one command (configs/TASK/solution-PRESET.yaml, PRESET=cpu|gpu): families, pseudo rounds (where the preset has them), stack, submission
	$(MAKE) --no-print-directory data-demo
	$(CLI) solution --config configs/$(TASK)/solution-$(PRESET).yaml --data $(DATA) $(foreach s,$(SET),--set $(s))
	@if [ "$(TASK)" != speech_commands ] && [ -f "$(DATA)/demo_holdout/answers.csv" ]; then \
	  $(CLI) predict --config configs/$(TASK)/solution-$(PRESET).yaml --data $(DATA) --audio $(DATA)/demo_holdout \
	    --answers $(DATA)/demo_holdout/answers.csv --out runs/$(TASK)/demo_holdout.csv; fi

# The Kaggle task ends with a submission; the others predict their demo's unseen speakers.
ifeq ($(TASK),speech_commands)
DEMO_LAST := submission
else
DEMO_LAST := predict AUDIO=$(DATA)/demo_holdout ANSWERS=$(DATA)/demo_holdout/answers.csv
endif

demo: $(STAMP) ## set up, demo data, folds, train all folds, stack, then a submission (or predict); TASK=asr: demo data, then the CTC recogniser and its test WER/CER; TASK=bengali_ai: the same, then the id,sentence submission
	@start=$$(date +%s); last=$$start; \
	step() { now=$$(date +%s); echo "demo step $$1: $$((now - last)) s"; last=$$now; }; \
	$(MAKE) --no-print-directory data-demo && step data && \
	if [ -n "$(filter $(ASR_TASKS),$(TASK))" ]; then \
	  $(MAKE) --no-print-directory train && step train && \
	  if [ "$(TASK)" = bengali_ai ]; then $(MAKE) --no-print-directory submission && step submission; fi && \
	  echo "demo finished in $$(( $$(date +%s) - start )) s"; exit $$?; fi && \
	{ [ -f folds/$(TASK).csv ] || $(MAKE) --no-print-directory folds; } && step folds && \
	$(MAKE) --no-print-directory train && step train && \
	$(MAKE) --no-print-directory stack && step stack && \
	$(MAKE) --no-print-directory $(DEMO_LAST) && step $(firstword $(DEMO_LAST)) && \
	echo "demo finished in $$(( $$(date +%s) - start )) s"

tune: $(STAMP) ## Optuna study <task>-<experiment> over MODEL's tune.space: TRIALS in all, WORKERS processes
	$(CLI) tune $(COMMON) $(STORE) $(if $(TRIALS),--trials $(TRIALS)) --workers $(WORKERS)

best-config: $(STAMP) ## write the study's best trial as configs/<task>/<experiment>-best.yaml (make train MODEL=<experiment>-best)
	$(CLI) tune $(COMMON) $(STORE) --export

dashboard: $(STAMP) ## optuna-dashboard on the study storage at http://127.0.0.1:PORT (Ctrl-C stops it)
	$(CLI) dashboard $(COMMON) $(STORE) --port $(PORT)

dashboard-screenshot: $(STAMP) ## PNG of the study's dashboard page (headless Chromium): studies/<study>/dashboard.png
	$(CLI) dashboard-screenshot $(COMMON) $(STORE)

# numba compiles librosa's kernels on their first call (~35 s) and caches them in the venv:
# done once per venv before the first `make bench`, so no run times a compiler.
$(VENV)/.librosa-jit: $(STAMP)
	@echo "compiling librosa's numba kernels for the benchmark's reference, once per venv"
	$(BIN)/python -m speechstack.bench --warm-up
	touch $@

bench: $(STAMP) $(VENV)/.librosa-jit ## speed benchmarks vs targets (features, data pipeline, loop, inference, scaling, demo) -> bench/results.json; BENCH_ARGS=--skip-demo
	$(BIN)/python -m speechstack.bench --out bench/results.json $(BENCH_ARGS)

test: $(STAMP) ## run the fast test suite (no slow marker) in TEST_JOBS processes (pytest-xdist)
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_JOBS) --dist worksteal

test-all: $(STAMP) ## run every test, slow ones included
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist worksteal

lint: $(STAMP) ## ruff
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean-tmp: $(STAMP) ## remove temp files and folders that killed runs left (only those whose process is gone)
	$(CLI) clean-tmp

clean: ## remove runs, caches and generated demo data (keeps .venv)
	rm -rf runs cache data .pytest_cache .ruff_cache
