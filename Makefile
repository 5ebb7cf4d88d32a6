.PHONY: demo run test lint typecheck bench lock

demo:  ## everything on this machine: history, meter, edge, server and dashboard (Ctrl-C stops)
	bash scripts/demo.sh

run:  ## the server on the embedded default (SQLite, local-memory cache)
	bash scripts/serve.sh

test:  ## the suite on PostgreSQL + Redis, then on SQLite
	bash scripts/test.sh

lint:
	bash scripts/venv.sh dev
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# The server settings: the Django plugin reads the installed apps' models from them.
typecheck:  ## mypy with the Django and DRF stubs over the app packages (pyproject.toml)
	bash scripts/venv.sh dev
	P1_ROLE=server .venv/bin/mypy

bench:
	bash scripts/venv.sh dev
	.venv/bin/python bench/ingest.py

lock:  ## regenerate the hash-locked requirements/*.txt from the loose requirements/*.in
	bash scripts/lock.sh
