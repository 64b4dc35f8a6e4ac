# The two commands of the README. Each sets up everything it needs (tools/misc/setup_env.sh is idempotent).
PY := .venv/bin/python

.PHONY: demo test setup

setup:
	bash tools/misc/setup_env.sh

demo: setup
	$(PY) tools/pipeline.py

test: setup
	$(PY) -m pytest tests -q -p no:cacheprovider
