# Warren: build, test, run.
VENV ?= .venv
PYTHON ?= python3
SWIFT ?= swift

.PHONY: build release test test-swift test-interop test-rabbitmq fuzz venv run format clean microbench compare container-test

build:
	$(SWIFT) build

release:
	$(SWIFT) build -c release

run:
	$(SWIFT) run -c release warren

## All tests: Swift unit and integration tests, then the interop suites (pika, aio-pika, rabbitmq-c tools)
## against a broker process the suite starts.
test: test-swift test-interop

test-swift:
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

$(VENV)/.installed: Tests/Interop/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r Tests/Interop/requirements.txt
	touch $@

venv: $(VENV)/.installed

test-interop: venv build
	WARREN_BIN=$$($(SWIFT) build --show-bin-path)/warren $(VENV)/bin/python -m pytest -c Tests/Interop/pytest.ini Tests/Interop -q

## The behaviour tests against Debian's RabbitMQ (installed if missing): both brokers must pass them.
test-rabbitmq: venv build
	PYTHON=$(VENV)/bin/python Scripts/test-rabbitmq.sh

## The libFuzzer targets (frames, a whole connection, field tables, the YAML loader), FUZZ_SECONDS each.
fuzz:
	Scripts/fuzz.sh

## The container image, for real: static binary, image built and run with podman and runc, checked with pika
container-test: venv
	PYTHON=$(VENV)/bin/python Scripts/container-test.sh

## Microbenchmarks of the hot pieces (a few seconds).
microbench:
	$(SWIFT) run -c release warren-microbench

## Warren vs RabbitMQ, side by side (installs rabbitmq-server if missing).
compare:
	Benchmarks/compare.sh

format:
	$(SWIFT) format --in-place --recursive --parallel Sources Tests Package.swift

clean:
	rm -rf .build $(VENV)
