# The two commands of the README: `make demo` and `make test`. Both install first if needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# The S3 test server (moto) lives in a venv of its own: botocore and the
# kubernetes client want incompatible python-dateutil versions.
S3VENV := .venv-s3
S3STAMP := $(S3VENV)/.installed-stamp
# The browser tests (tests/e2e/test_dashboard.py): Debian's chromium and its driver. The
# target is the driver's file, so a machine that has it skips this (idempotent, instant).
BROWSER := /usr/bin/chromedriver
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-test demo test lint typecheck format bench bench-gp soak clean \
	images image-tools base-image image-test bench-peers

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9
	# --compile-bytecode: uv writes no .pyc otherwise, and where PYTHONDONTWRITEBYTECODE is
	# set (as on these machines) every process then compiles what it imports: TensorFlow's
	# import costs ~10 s of CPU instead of ~4.5 s, in every worker and test process.
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -e '.[trainer,parquet,dev,bench]'
	touch $(STAMP)

$(S3STAMP):
	$(PYTHON) -m venv $(S3VENV)
	$(S3VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
	touch $(S3STAMP)

$(BROWSER):
	$(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver \
	  || { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium chromium-driver; }

install: $(STAMP)

install-test: $(STAMP) $(S3STAMP) $(BROWSER)

demo: install
	$(VENV)/bin/hpo run examples/quickstart.yaml --out runs

# Parallel (pytest-xdist): tests sharing an expensive set-up stay on one worker
# (tests/conftest.py); collection order is kept, so the longest test (the operator
# killed at many points, first in tests/e2e) starts first.
TEST_WORKERS ?= 3

# The types first (mypy, [tool.mypy] in pyproject.toml: ~20 s); the import layers are a test
# (tests/unit/test_architecture.py).
test: install-test
	$(VENV)/bin/mypy
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

typecheck: install
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install-test
	# the search itself, exactly, on the FCNet tables: ours, its random stage, random, TPE
	$(PY) benchmarks/exact_search.py
	# by the clock: P slots, the tables' training times as durations, asynchronous peers
	$(PY) benchmarks/exact_search.py --parallel 1 8 32 --budgets 80 --repeats 10 \
		--methods ours random tpe --out benchmarks/results/exact_parallel.json
	# the twelve tables (4 FCNet, 8 HPOBench MLP; kc1, segment, blood_transfusion, credit_g held out)
	$(PY) benchmarks/exact_search.py --parallel 1 --datasets twelve --budgets 40 80 160 \
		--repeats 10 --methods ours random tpe --out benchmarks/results/exact_twelve.json
	$(PY) benchmarks/local_throughput.py
	$(PY) benchmarks/ledger_write.py
	$(PY) benchmarks/operator_scale.py
	$(PY) benchmarks/kt_side_by_side.py
	# search quality on real training last: 1-2 h on 2 cores
	$(PY) benchmarks/quality.py

# The peers of the exact benchmark that take minutes per study (Gaussian processes:
# Optuna's GPSampler needs torch, CPU build). Resumable: every finished repeat is kept in
# benchmarks/results/*.parts.jsonl, so an interrupted run continues where it stopped.
GP_RUN = $(PY) benchmarks/exact_search.py --budgets 40 80 160 --repeats 10 --slow-repeats 10 --resume
bench-gp: install-test
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(GP_RUN) --methods ours optuna-gp --out benchmarks/results/exact_search_optuna_gp.json
	$(GP_RUN) --methods ours kt-bayes --out benchmarks/results/exact_search_kt_bayes.json
	$(GP_RUN) --methods ours skopt-gp --out benchmarks/results/exact_search_skopt_gp.json

# The strongest peers of the exact benchmark, SMAC3 and HEBO, each in a venv of its own
# (HEBO needs numpy < 1.25), pinned in benchmarks/requirements-{smac,hebo}.txt; they answer
# benchmarks/peers_extra/compare.py over JSON on stdin/stdout. SMAC3 2.x needs no pyrfr, so
# no swig. HEBO's torch is the CPU build (2.13.0+cpu, from the machine's local wheels).
PEER_PYTHON ?= python3.11
PEER_VENVS := benchmarks/.venv-smac/.installed-stamp benchmarks/.venv-hebo/.installed-stamp
bench-peers: $(PEER_VENVS)

benchmarks/.venv-%/.installed-stamp: benchmarks/requirements-%.txt
	rm -rf benchmarks/.venv-$*
	$(PEER_PYTHON) -m venv benchmarks/.venv-$*
	benchmarks/.venv-$*/bin/pip install --quiet --disable-pip-version-check --no-deps -r $<
	touch $@

# A 2,000-training study with instant pods (~2-3 min); fails if the operator's
# memory at the end is more than 10% above its level after 200 trainings.
soak: install-test
	$(PY) benchmarks/soak.py

# Container images, with whichever of docker (a running engine) or podman is here, tagged
# with the chart's appVersion under the names the chart and the CRD default to. On these
# machines: podman and runc from Debian (installed if neither engine is here), the
# settings of images/containers.conf, and the base image made by debootstrap
# (images/base-image.sh), since no registry is reachable.
ENGINE ?= $(shell if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	echo docker; elif command -v podman >/dev/null 2>&1; then echo podman; fi)
VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$$/\1/p' charts/hpo-operator/Chart.yaml)
IMAGE_REPO ?= ghcr.io/hpo-operator
OPERATOR_IMAGE ?= $(IMAGE_REPO)/operator:$(VERSION)
TRAINER_IMAGE ?= $(IMAGE_REPO)/trainer:$(VERSION)
# The GPU build of the trainer (tensorflow[and-cuda], ~6 GB): what a study asking for
# nvidia.com/gpu runs when it leaves trainer.image at its default.
TRAINER_GPU_IMAGE ?= $(IMAGE_REPO)/trainer:$(VERSION)-gpu
BASE_IMAGE := docker.io/library/python:3.11.11-slim-bookworm
ifneq ($(ENGINE),docker)
export CONTAINERS_CONF ?= $(CURDIR)/images/containers.conf
endif

image-tools:
	@if [ -z "$(ENGINE)" ]; then \
		command -v apt-get >/dev/null || { echo "no docker engine and no podman: install one"; exit 1; }; \
		apt-get update -qq && apt-get install -y -qq podman runc debootstrap >/dev/null; fi

# LOCAL_BASE=0: never make the base here, let the engine pull it.
LOCAL_BASE ?= 1
base-image: image-tools
	@engine=$(or $(ENGINE),podman); if $$engine image inspect $(BASE_IMAGE) >/dev/null 2>&1; then \
		echo "base image $(BASE_IMAGE) is here"; \
	elif [ "$(LOCAL_BASE)" = 1 ] && [ "$$(id -u)" = 0 ] && command -v debootstrap >/dev/null 2>&1; \
		then images/base-image.sh $$engine; \
	else echo "$$engine pulls $(BASE_IMAGE)"; fi

images: base-image
	$(or $(ENGINE),podman) build -t $(OPERATOR_IMAGE) -f Dockerfile .
	$(or $(ENGINE),podman) build -t $(TRAINER_IMAGE) -f trainer-image/Dockerfile .
	$(or $(ENGINE),podman) build -t $(TRAINER_GPU_IMAGE) --build-arg VARIANT=gpu -f trainer-image/Dockerfile .
	@$(or $(ENGINE),podman) images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -F -e $(OPERATOR_IMAGE) -e $(TRAINER_IMAGE)

# The images run the way a cluster runs them (tests/images; not part of `make test`):
# builds them first (cached layers: seconds when nothing changed).
image-test: images install-test
	HPO_ENGINE=$(or $(ENGINE),podman) HPO_OPERATOR_IMAGE=$(OPERATOR_IMAGE) HPO_TRAINER_IMAGE=$(TRAINER_IMAGE) \
		HPO_TRAINER_GPU_IMAGE=$(TRAINER_GPU_IMAGE) \
		$(PY) -m pytest tests/images -p no:xdist -v

clean:
	rm -rf $(VENV) $(S3VENV) runs .pytest_cache
