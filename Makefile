# One entry point for people and CI. `make test` on a fresh Debian 12 machine installs the
# dependencies, builds everything and runs the whole test suite.
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc)

.PHONY: all deps configure build test bench demo clean

all: build

deps:
	scripts/install-deps vm

configure: deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS)

# An incremental-backup cycle against a real kernel (here, or in the bundled qemu guest).
demo:
	scripts/demo/run $(BUILD_DIR)

bench: build
	scripts/run-benchmarks $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR)
