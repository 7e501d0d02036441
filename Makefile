# The two commands of the README. Both create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-slow data venv clean-results

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Re-install when pyproject.toml changes (the stamp is newer than it otherwise).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test,dask]'
	touch $@

venv: $(VENV)/.installed

# Debian's package when apt can install it; otherwise the loader falls back to torchvision's download.
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST: $(FMNIST_DIR)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -q && apt-get install -y -q dataset-fashion-mnist) || echo "apt failed: torchvision will download Fashion-MNIST"; \
	else echo "no root apt: torchvision will download Fashion-MNIST on first use"; fi

# Trains into the git-ignored results/local/ (never over the reference results), then sets the
# user's numbers (B) beside the committed reference cell (A).
demo: venv data
	$(BIN)/python -m bench run --defense vfc --attacker adaptive
	@echo "== your run (B, one seed) against the reference results (A, three seeds). One seed has no interval, so"
	@echo "== each verdict reads 'n = 1: no test'; add --seeds 0-2 to the run above for a tested comparison =="
	$(BIN)/python -m bench compare results/reference/leaderboard.csv results/local/leaderboard.csv \
		--a "vfc()" --b "vfc()" --dataset fashion-mnist

test: venv
	$(BIN)/python -m pytest -q

test-slow: venv
	$(BIN)/python -m pytest -q -m slow
