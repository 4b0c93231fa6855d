# 会诊 Huizhen. `make run` serves the demo; `make test` runs every test. Nothing to install by hand
# beyond Python 3.11+, Node 20+ and (for the tests) the Debian packages that .ci/run installs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
WEB_SOURCES := $(shell find web/src web/index.html web/package.json web/vite.config.ts -type f 2>/dev/null)

export HUIZHEN_HOST ?= 127.0.0.1
export HUIZHEN_PORT ?= 8080
export HUIZHEN_DATA_DIR ?= var

.PHONY: run test check web ohif bench bench-api bench-cycles bench-realtime bench-dicom clean install

$(BIN)/huizhen: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,codecs]'
	touch $@

# The tests also decode 12-bit JPEG, which only the GPL-3.0 codecs-gpl extra can (docs/api.md).
$(VENV)/.codecs-gpl: $(BIN)/huizhen
	$(PY) -m pip install --quiet -e '.[codecs-gpl]'
	touch $@

install: $(BIN)/huizhen

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SOURCES)
	cd web && npm run build

web: web/dist/index.html

# OHIF Viewer's prebuilt dist from npm (@ohif/app), pinned by the checksum file, for
# tests/web/test_ohif.py. Its 136 MB ONNX runtime (AI tools) and source maps are left out.
OHIF_DIR := tests/ohif/viewer
OHIF_TGZ := $(lastword $(shell cat tests/ohif/ohif-app.sha512))
OHIF_SPEC := $(subst ohif-app-,@ohif/app@,$(basename $(OHIF_TGZ)))

$(OHIF_DIR)/index.html: tests/ohif/ohif-app.sha512
	rm -rf $(OHIF_DIR) tests/ohif/pack && mkdir -p $(OHIF_DIR) tests/ohif/pack
	cd tests/ohif/pack && npm pack --silent --loglevel=error $(OHIF_SPEC) >/dev/null
	cd tests/ohif/pack && sha512sum --check --quiet ../ohif-app.sha512
	tar -xzf tests/ohif/pack/$(OHIF_TGZ) -C $(OHIF_DIR) --strip-components=2 \
	    --exclude='package/dist/ort' --exclude='*.map' package/dist
	rm -rf tests/ohif/pack
	touch $@

ohif: $(OHIF_DIR)/index.html

run: install web
	$(BIN)/huizhen migrate
	$(BIN)/huizhen seed-demo --if-empty
	$(BIN)/huizhen serve

check: install
	$(BIN)/ruff check server signalling imaging tests bench
	$(BIN)/ruff format --check server signalling imaging tests bench
	$(BIN)/mypy

test: install $(VENV)/.codecs-gpl web ohif
	$(BIN)/pytest

bench: install
	$(PY) -m bench.api
	$(PY) -m bench.cycles
	$(PY) -m bench.realtime
	$(PY) -m bench.dicom
	$(PY) -m bench.recorder

bench-api: install
	$(PY) -m bench.api

bench-cycles: install
	$(PY) -m bench.cycles

bench-realtime: install
	$(PY) -m bench.realtime

# Ours against Debian's Orthanc (apt-get install -y orthanc orthanc-dicomweb; root, for unshare -n).
bench-dicom: install
	$(PY) -m bench.dicom

clean:
	rm -rf $(VENV) web/node_modules web/dist tests/ohif/viewer var .mypy_cache .ruff_cache .pytest_cache
