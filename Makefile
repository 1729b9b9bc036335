# rabbit-lab: the everyday commands. `make help` lists them.
PYTHON ?= python3

.PHONY: help install demo test test-docker test-quick lint lab bench up definitions

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install:  ## install the project with its dev and lab extras
	$(PYTHON) -m pip install -e ".[dev,lab]"

demo:  ## run every scenario on a real broker and write the report (the lab's main job)
	$(PYTHON) -m harness run all

# Two workers, whole files each (module fixtures stay together): most tests wait on a broker
# or a service, not on a core, and each worker starts its own isolated node.
WORKERS ?= 2

test:  ## the whole test suite (real broker; scenarios, notebooks and containers included)
	$(PYTHON) -m pytest -n $(WORKERS) --dist loadfile
	$(MAKE) test-docker

# The integration subset that CI also runs on a broker started through testcontainers.
DOCKER_SUBSET = baseline or dlq or idempotency or travels or malformed or duplicated or poison

test-docker:  ## the integration subset again, on a testcontainers broker (needs Docker/podman)
	$(PYTHON) -m pytest --broker docker -m broker tests/test_pipeline.py tests/test_scenarios.py \
		-k "$(DOCKER_SUBSET)"

test-quick:  ## the fast subset: no slow scenarios, notebooks or containers
	$(PYTHON) -m pytest -n $(WORKERS) --dist loadfile -m "not slow and not container"

lint:  ## ruff
	$(PYTHON) -m ruff check .

lab:  ## open the notebooks in JupyterLab
	jupyter lab notebooks/

bench:  ## measure drain rate, latency and HTTP rate
	$(PYTHON) -m harness bench

up:  ## start a broker and the three services for exploring by hand
	$(PYTHON) -m harness up

definitions:  ## regenerate the docker-compose broker definitions from the topology
	$(PYTHON) -m lab_services.topology definitions -o docker/rabbitmq/definitions.json
