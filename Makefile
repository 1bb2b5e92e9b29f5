# Two commands a newcomer needs: `make demo` and `make test`. Both install into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned so pip takes the wheels on this machine's disk instead of downloading newer ones.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
CHEXNET := examples/chexnet
XRAY := $(CHEXNET)/data/chest_xray_00030605_000.jpg

.PHONY: demo serve test bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[torch,serve,ray,dev]' $(TORCH_PINS)
	touch $@

# CheXNet end to end: build on PyTorch, export to ONNX, verify parity stage by stage,
# write a checksummed artifact, inspect it, predict the sample X-ray from the artifact on
# ONNX Runtime in a process where torch cannot be imported, then serve the artifact and
# run the same class against the server as a remote backend.
demo: $(VENV)/.installed
	$(PY) -m model_agnostic export --config $(CHEXNET)/config.toml --force
	$(PY) -m model_agnostic inspect $(CHEXNET)/artifacts/chexnet
	$(PY) -m model_agnostic predict --forbid-torch --config $(CHEXNET)/artifacts/chexnet $(XRAY)
	$(PY) $(CHEXNET)/serve_demo.py

# Keep a CheXNet server running on http://127.0.0.1:8000 (web page at /ui); Ctrl-C stops it.
serve: $(VENV)/.installed
	test -f $(CHEXNET)/artifacts/chexnet/model.onnx || $(MAKE) demo
	$(PY) -m model_agnostic serve $(CHEXNET)/artifacts/chexnet

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) bench/backends.py
	$(PY) bench/preprocessing.py
	$(PY) bench/serving.py
	$(PY) bench/server_memory.py
	$(PY) bench/ray_overhead.py

clean:
	rm -rf $(VENV) $(CHEXNET)/artifacts bench/results
