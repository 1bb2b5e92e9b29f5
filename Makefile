# Two commands a newcomer needs: `make demo` and `make test`. Both install into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
# Pinned so pip takes the wheels on this machine's disk instead of downloading newer ones.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
CHEXNET := examples/chexnet
XRAY := $(CHEXNET)/data/nih_cxr14_00000001_000.png

.PHONY: demo serve test bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[torch,serve,ray,dicom,tf,dev]' $(TORCH_PINS)
	touch $@

# CheXNet end to end: build on PyTorch, export to ONNX, verify parity stage by stage,
# write a checksummed artifact, inspect it, predict the sample X-ray from the artifact on
# ONNX Runtime in a process where torch cannot be imported (its findings, and the heatmap
# of the top one written to artifacts/heatmaps/), then serve the artifact and run the
# same class against the server as a remote backend.
demo: $(VENV)/.installed
	$(PY) -m model_agnostic export --config $(CHEXNET)/config.toml --force
	$(PY) -m model_agnostic inspect $(CHEXNET)/artifacts/chexnet
	$(PY) -m model_agnostic predict --forbid-torch --config $(CHEXNET)/artifacts/chexnet \
		--explain 1 --heatmaps $(CHEXNET)/artifacts/heatmaps $(XRAY)
	$(PY) $(CHEXNET)/serve_demo.py

# Keep a CheXNet server running on http://127.0.0.1:8000 (web page at /ui); Ctrl-C stops it.
serve: $(VENV)/.installed
	test -f $(CHEXNET)/artifacts/chexnet/model.onnx || $(MAKE) demo
	$(PY) -m model_agnostic serve $(CHEXNET)/artifacts/chexnet

# Lint, format and types first (seconds), then the suite.
test: $(VENV)/.installed
	$(VENV)/bin/ruff check model_agnostic adapters
	$(VENV)/bin/ruff format --check model_agnostic adapters
	$(VENV)/bin/mypy
	$(PY) -m pytest

# Every measured claim, in an order that needs no manual step; each script writes
# bench/results/<script>.json, then the tables in docs/ are rendered from those files.
# Long: about 3 hours on the 2-core development machine (docs/benchmarks.md).
BENCHES := batcher resize_bands preprocessing backends exporters cold_start \
	thread_interference server_memory serving load ray_overhead ray_serving fuzz \
	install_size mutations export_cost peers json_path grpc_vs_http remote_overhead \
	explain_cost dicom_decode conformance tensorflow_backend
bench: $(VENV)/.installed
	cd bench && for script in $(BENCHES); do ../$(PY) $$script.py || exit 1; done
	cd bench && ../$(PY) export_coverage.py --calibrate --force
	cd bench && ../$(PY) export_coverage.py --force
	cd bench && ../$(PY) export_coverage.py --gate --force
	$(PY) bench/render_docs.py

# Keeps bench/results/*.json: they are committed, the docs quote them.
clean:
	rm -rf $(VENV) $(CHEXNET)/artifacts bench/results/export_coverage bench/results/*.onnx
