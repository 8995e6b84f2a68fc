# Convenience front end over meson; the README's two commands use it.
BUILD ?= build
MESON_FLAGS ?=

.PHONY: all build demo check test format format-check clean

all: build

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_FLAGS)

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: build
	./scripts/demo.sh $(BUILD)/src/cli/cista

# Everything CI runs: format check, gcc and clang builds, unit tests, fuzz
# corpus replay, ASan+UBSan unit tests, integration tests. Ends with
# "N passed, N failed".
check:
	./tests/run-all.sh

test: build
	meson test -C $(BUILD) --print-errorlogs

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

format:
	clang-format -i $(FORMAT_FILES)

format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf $(BUILD) build-asan build-clang
