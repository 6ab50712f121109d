# Thin wrapper: the work is done by CMake, lab/setup, lab/run and spec/run.
BUILD ?= build
CMAKE_FLAGS ?=

.PHONY: all build setup check check-host check-lab demo lab-shell fuzz dist completions doc clean

all: build

build:
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL cmake --build $(BUILD) --parallel

setup:
	@lab/setup

check: setup
	@$(MAKE) --no-print-directory build
	@spec/run all

check-host: build
	@spec/run host

check-lab: build
	@spec/run lab

demo: setup
	@$(MAKE) --no-print-directory build
	@lab/run -- sh -c 'img=$$(lab/initramfs --run examples/linux_demo.sh --bin /usr/bin/lspci --file /usr/share/misc/pci.ids:/usr/share/misc/pci.ids) && lua5.4 passthrough.lua --kernel $$LUAVFIO_CACHE/lab/kernel/boot/vmlinuz-$$LUAVFIO_LAB_KERNEL --initrd $$img --append quiet --cpus 2 --device nvme --device e1000e && echo && lua5.4 passthrough.lua --device edu --plan && echo && lua5.4 passthrough.lua --device edu && echo && lua5.4 examples/edu_tour.lua'

lab-shell: setup build
	@lab/run --interactive

# FUZZ_SECONDS of libFuzzer over the trap core on the recorded lab devices
FUZZ_SECONDS ?= 300
fuzz: setup build
	@fuzz/run $(FUZZ_SECONDS)

# The release's archive, rockspecs and packed source rock in dist/ (tools/dist says which);
# then, offline: luarocks --lua-version=5.4 install dist/luavfio-VERSION-1.src.rock
dist:
	@tools/dist

# The commands' shell completion, from their option definitions, in $(BUILD)/completions/
# (e.g. for bash: cp $(BUILD)/completions/vfio-passthrough.bash
# ~/.local/share/bash-completion/completions/vfio-passthrough).
completions:
	@mkdir -p $(BUILD)/completions
	@for c in vfio-passthrough vfio-poke vfio-user-serve; do for s in bash zsh fish; do \
	  bin/$$c --completion $$s > $(BUILD)/completions/$$c.$$s || exit 1; done; done
	@ls $(BUILD)/completions/*

# The API reference from the doc comments (config.ld; Debian's lua-ldoc and lua-markdown):
# build/doc/index.html, build/doc/api.lua (the same text as data, for the REPL's help),
# and the coverage of the public API (spec/host/doc_coverage_spec.lua checks it).
# LDoc's notes on merging the csrc/lua files into one module (found master module, closing
# section) and on reading config.ld are progress, not warnings: they are left out.
doc: build
	@rm -rf $(BUILD)/doc $(BUILD)/ldoc.log
	@ldoc -q -d $(BUILD)/doc . >$(BUILD)/ldoc.log 2>&1 || { cat $(BUILD)/ldoc.log; exit 1; }
	@LUA_PATH='tools/?.lua;;' LDOC_INDEX_OUT=$(BUILD)/doc/api.lua ldoc -q --filter ldoc_index.filter . \
		>>$(BUILD)/ldoc.log 2>&1 || { cat $(BUILD)/ldoc.log; exit 1; }
	@grep -v -e '^found master module' -e 'closing section from master module' \
		-e '^reading configuration from' $(BUILD)/ldoc.log || true
	@lua5.4 tools/doc_coverage.lua $(BUILD)/doc/api.lua
	@echo "API reference: $(BUILD)/doc/index.html"

clean:
	rm -rf $(BUILD) build-* dist
