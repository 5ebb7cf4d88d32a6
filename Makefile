.PHONY: demo run test lint bench lock

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

bench:
	bash scripts/venv.sh dev
	.venv/bin/python bench/ingest.py

lock:  ## regenerate the hash-locked requirements/*.txt from the loose requirements/*.in
	bash scripts/lock.sh
