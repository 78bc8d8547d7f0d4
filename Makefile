# WSSS pipeline — the Makefile is the table of contents.
#   make demo                     everything on the embedded synthetic dataset (CPU)
#   make test                     the test suite
#   make env-mm / test-mm         the optional OpenMMLab environment (.venv-mm: mmcv, mmseg) / the suite in it
#   make <stage> [EXP=cfg] [WORK_DIR=dir] [OPTS="a.b=1 c=x"] [FORCE=1] [GPUS=N]
# Each stage skips itself when its config section and upstream outputs are unchanged.
SHELL := bash
.DEFAULT_GOAL := help
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
ENV_STAMP := $(VENV)/.stamp
# optional second environment: torch 2.5.1 + compiled mmcv + mmsegmentation (requirements-mm.txt)
MM_VENV ?= .venv-mm
MM_STAMP := $(MM_VENV)/.stamp
# the retrain stage runs in it once it exists (otherwise the stage says how to build it)
RETRAIN_VENV = $(if $(wildcard $(MM_STAMP)),$(MM_VENV),$(VENV))

EXP ?= configs/demo_synthetic.py
WORK_DIR ?=
OPTS ?=
FORCE ?= 0
GPUS ?= 1
# data-stage shortcuts: DATASET=voc|synthetic, VOC_ROOT (= DATA_ROOT), SBD_ROOT and AUG_DIR
# (a SegmentationClassAug folder)
DATASET ?=
DATA_ROOT ?= $(VOC_ROOT)
SBD_ROOT ?=
AUG_DIR ?=

# OPTS reaches Python as ONE single-quoted shell word (--opts-line), split there like a shell
# would: values may hold parentheses, spaces and quotes, e.g.
#   make eval OPTS="eval.scales=(0.75,1.0) experiment.name='my run'"
# Paths (EXP, WORK_DIR, VOC_ROOT, SBD_ROOT, AUG_DIR, DIR, GPU_EXP) may hold spaces, quotes and
# parentheses: each is made absolute as text (a path with a space is never split into words)
# and single-quoted, in OPTS too, where a quoted value is taken as it is.
shell_quote = '$(subst ','\'',$(1))'
abs_path = $(if $(word 2,$(1)),$(if $(filter /%,$(firstword $(1))),$(1),$(CURDIR)/$(1)),$(abspath $(1)))
path_arg = $(call shell_quote,$(call abs_path,$(1)))
DATA_OPTS = $(if $(DATASET),data.dataset=$(DATASET)) \
            $(if $(DATA_ROOT),data.root=$(call path_arg,$(DATA_ROOT)) $(if $(DATASET),,data.dataset=voc)) \
            $(if $(SBD_ROOT),data.sbd_root=$(call path_arg,$(SBD_ROOT))) \
            $(if $(AUG_DIR),data.aug_dir=$(call path_arg,$(AUG_DIR)))
ALL_OPTS = $(DATA_OPTS) $(OPTS)
STAGE_ARGS = --exp $(call path_arg,$(EXP)) $(if $(WORK_DIR),--work-dir $(call path_arg,$(WORK_DIR))) \
             $(if $(strip $(ALL_OPTS)),--opts-line $(call shell_quote,$(ALL_OPTS))) $(if $(filter 1,$(FORCE)),--force)
# the environments' folders are Make targets, where a space, quote or parenthesis cannot be
lparen := (
rparen := )
unsafe_path = $(or $(word 2,$(1)),$(findstring ',$(1)),$(findstring ",$(1)),$(findstring $(lparen),$(1)),$(findstring $(rparen),$(1)))
$(foreach v,VENV MM_VENV,$(if $(call unsafe_path,$($(v))),$(error $(v)=$($(v)): a space, quote or parenthesis cannot be in this folder's name (it is a Make target): choose another $(v)=)))
# training stages go through torchrun when GPUS > 1
LAUNCH = $(if $(filter-out 0 1,$(GPUS)),$(VENV)/bin/torchrun --standalone --nproc_per_node=$(GPUS) -m,$(PY) -m)

STAGES := data classifier heatmaps saliency seeds segmenter retrain upper_bound eval submit localize report
DEMO_STAGES := data classifier heatmaps saliency seeds segmenter upper_bound eval submit localize report

.PHONY: help env env-mm test test-mm demo bench gpu-check summary ablation growing-check $(STAGES) clean-work

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-18s %s\n", $$1, $$2}'

env: $(ENV_STAMP) ## build the core virtual environment (.venv) if missing

$(ENV_STAMP): requirements.txt tools/make_venv.sh
	PYTHON=$(PYTHON) bash tools/make_venv.sh core $(VENV)

env-mm: $(MM_STAMP) ## build the OpenMMLab environment (.venv-mm: torch 2.5.1, mmcv compiled, mmseg) for `make retrain`

$(MM_STAMP): requirements-mm.txt tools/make_venv.sh
	PYTHON=$(PYTHON) bash tools/make_venv.sh mm $(MM_VENV)

test: $(ENV_STAMP) ## run the test suite (core environment; mmseg tests are skipped, saying why)
	$(PY) -m pytest tests

test-mm: $(MM_STAMP) ## run the whole test suite in the OpenMMLab environment (retrain tests included)
	$(MM_VENV)/bin/python -m pytest tests

bench: $(ENV_STAMP) ## benchmarks -> bench/results/ (QUICK=1 tiny sizes; ONLY="growing crf" a subset)
	$(PY) -m bench.run $(if $(filter 1,$(QUICK)),--quick) $(if $(ONLY),--only $(ONLY))

# gpu-check needs only torch + numpy: the project's .venv when there is one, else python3
GPU_CHECK_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_EXP ?= configs/voc_ep_dsrg.py
gpu-check: ## VOC-size training + inference on CUDA (synthetic inputs; no .venv or VOC needed) -> bench/results/gpu_check.*
	$(GPU_CHECK_PY) -m bench.gpu_check --exp $(call path_arg,$(GPU_EXP))

demo: $(ENV_STAMP) ## every stage on the embedded synthetic dataset (CPU), then the summary
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory $(DEMO_STAGES) && \
	$(MAKE) --no-print-directory summary && \
	echo "demo finished in $$(( $$(date +%s) - start )) s"

summary: $(ENV_STAMP) ## print seed / pseudo-label / val / upper-bound numbers of an experiment
	@$(PY) -m stages.summary $(STAGE_ARGS)

data: $(ENV_STAMP) ## prepare the dataset index (DATASET=synthetic|voc, VOC_ROOT=, SBD_ROOT= or AUG_DIR=)
	$(PY) -m stages.data $(STAGE_ARGS)

classifier: $(ENV_STAMP) ## train the VGG-16 multi-label classifier (EP by default; GPUS=N for DDP)
	$(LAUNCH) stages.classifier $(STAGE_ARGS)

heatmaps: $(ENV_STAMP) ## class heatmaps (CAM, entropy weights) of every trainaug image
	$(PY) -m stages.heatmaps $(STAGE_ARGS)

saliency: $(ENV_STAMP) ## saliency maps: imported (saliency.dir) or the built-in RBD method
	$(PY) -m stages.saliency $(STAGE_ARGS)

seeds: $(ENV_STAMP) ## seeds from heatmaps + saliency thresholds, with seed quality
	$(PY) -m stages.seeds $(STAGE_ARGS)

segmenter: $(ENV_STAMP) ## train DeepLab-ASPP (VGG-16) with DSRG from the seeds (GPUS=N for DDP)
	$(LAUNCH) stages.segmenter $(STAGE_ARGS)

retrain: $(ENV_STAMP) ## DSRG 2nd round: 1st-round DeepLab-ASPP on its CRF pseudo-labels (mmseg models: .venv-mm)
	$(subst $(VENV)/bin/,$(RETRAIN_VENV)/bin/,$(LAUNCH)) stages.retrain $(STAGE_ARGS)

upper_bound: $(ENV_STAMP) ## the same segmenter trained on ground-truth masks (fully supervised reference)
	$(LAUNCH) stages.upper_bound $(STAGE_ARGS)

eval: $(ENV_STAMP) ## mIoU on the val split, with and without CRF
	$(PY) -m stages.eval $(STAGE_ARGS)

submit: $(ENV_STAMP) ## test-set predictions in the VOC server format + results.tgz
	$(PY) -m stages.submit $(STAGE_ARGS)

.PHONY: check-submission
check-submission: $(ENV_STAMP) ## validate a VOC submission (DIR= folder or .tgz; default WORK_DIR/submit/results/...)
	$(PY) -m stages.check_submission $(STAGE_ARGS) $(if $(DIR),--dir $(call path_arg,$(DIR)))

clean-work: ## delete WORK_DIR (default: work_dirs/<experiment>)
	rm -rf -- $(call shell_quote,$(if $(WORK_DIR),$(WORK_DIR),work_dirs/$(basename $(notdir $(EXP)))))

localize: $(ENV_STAMP) ## weakly-supervised localisation: lambda^top-k / CAM boxes, CorLoc + top-1 loc
	$(PY) -m stages.localize $(STAGE_ARGS)

report: $(ENV_STAMP) ## HTML report of an experiment: WORK_DIR/report/index.html (always regenerated)
	$(PY) -m stages.report $(STAGE_ARGS)

growing-check: $(ENV_STAMP) ## where DSRG growing puts its labels vs the GT, on the trained segmenter (IMAGES=200)
	@$(PY) -m stages.growing_check $(STAGE_ARGS) $(if $(IMAGES),--images $(IMAGES))

ablation: $(ENV_STAMP) ## classifier variants (GAP, EP, BEW, GNDRP, SGE, LIP...) -> one table (FULL=1: + segmenter; VARIANTS="gap ep")
	$(PY) -m stages.ablation $(STAGE_ARGS) $(if $(filter 1,$(FULL)),--full) $(if $(VARIANTS),--variants $(VARIANTS))
