# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint venv clean browser fonts

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 first: anything unpinned would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# napari and a Qt binding: the napari plug-in's tests drive napari and its widget headless (Qt offscreen).
	$(PY) -m pip install -q -e '.[test,scale,napari]' pyqt5
	$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'pip replaced torch: ' + v)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/micrometry demo --out demo-out

# Everything (what CI runs): the lint gate, then the whole suite.
test: $(STAMP) browser fonts lint
	$(PY) -m pytest -q

# ruff's lint rules and formatter (pyproject.toml [tool.ruff]); `ruff format .` fixes the format.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The fast lane while editing: no model training, demo, DDP, Ray, uvicorn or Chromium (marked slow).
test-fast: $(STAMP) lint fonts
	$(PY) -m pytest -q -m "not slow"

# The web app's browser test drives Debian's Chromium; install it when missing and we may.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "could not install chromium: the browser test will be skipped"; \
	  else echo "chromium missing and no root: the browser test will be skipped"; fi; \
	fi

# The scale-bar reader's glyph templates and the synthetic data bars are rendered from Debian's DejaVu and
# Liberation fonts (tests/test_scalebar.py fails, never skips, without them); install them when missing and we may.
fonts:
	@if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || [ ! -f /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core fonts-dejavu-extra fonts-liberation >/dev/null) \
	      || echo "could not install the fonts: tests/test_scalebar.py will fail"; \
	  else echo "DejaVu/Liberation fonts missing and no root: tests/test_scalebar.py will fail"; fi; \
	fi

clean:
	rm -rf $(VENV) demo-out
