# The two front-door commands (see README.md):
#   make run   – set up a virtualenv, install, migrate and start Kloyst on the embedded default
#   make test  – install test dependencies and system packages, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv

.PHONY: run test venv

venv:
	@scripts/bootstrap-venv "$(PYTHON)" "$(VENV)"

run: venv
	$(VENV)/bin/kloyst run development.ini

test:
	@scripts/run-tests
