# Thin wrapper over CMake. `make test SAN=1` builds and tests with ASan+UBSan.
BUILD ?= build
JOBS ?= $(shell nproc)
ifeq ($(SAN),1)
  BUILD := build-san
  CMAKE_FLAGS += -DCL_SAN=ON -DCMAKE_BUILD_TYPE=Debug
endif
CMAKE_FLAGS += -G Ninja

.PHONY: all build deps test bench fuzz demo clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

test: deps
	@$(MAKE) --no-print-directory build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

bench: deps
	@$(MAKE) --no-print-directory build BUILD=build-bench CMAKE_FLAGS="-G Ninja -DCMAKE_BUILD_TYPE=Release"
	scripts/bench build-bench

fuzz: deps
	CC=clang cmake -S . -B build-fuzz -G Ninja -DCL_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-fuzz -j $(JOBS)
	scripts/run-fuzz build-fuzz $(or $(FUZZ_SECONDS),20) $(FUZZ_RUNS)

demo: deps
	@$(MAKE) --no-print-directory build
	DEMO_MODEL="$(MODEL)" scripts/demo $(BUILD)

clean:
	rm -rf build build-san build-fuzz build-bench
