# smolgate build. `make` builds build/smolgate; `make test` builds everything with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs the test suite; `make bench`
# prints figures. New .c files are picked up by wildcard: no list to maintain.
#
# SIMD kernels (src/engine/kernels_*.c) carry target attributes on each function, so
# every file builds with the same flags; the kernel table picks a variant at run time.

CC      ?= cc
BUILD   ?= build
SAN     ?= 0
OPT     ?= -O2
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -pthread -Isrc \
              $(shell pkg-config --cflags jansson libpcre2-8 libcurl yaml-0.1 libedit 2>/dev/null) \
              -I/usr/include/postgresql
ifeq ($(SAN),1)
  BUILD := build-san
  CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDSAN = -fsanitize=address,undefined
  OPT := -O1
endif
CFLAGS  = $(CFLAGS_BASE) $(OPT) $(EXTRA_CFLAGS)
LDLIBS  = -ljansson -lpcre2-8 -lcurl -lssl -lcrypto -lsqlite3 -lpq -lhiredis -lyaml -ledit -lm -lpthread

LIB_SRC  := $(filter-out src/cli/main.c,$(wildcard src/*/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
# The dashboard's page, script and style (web/), compiled into the library as byte arrays.
WEB_SRC  := $(sort $(wildcard web/*.html web/*.js web/*.css))
LIB_OBJ  += $(BUILD)/obj/gen/web_assets.o
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)

.PHONY: default all test check bench clean fuzz deps deps-test serve

# Plain `make`: the program and compile_commands.json (`make deps` installs the libraries).
default: $(BUILD)/smolgate compile_commands.json

# Debian packages (and the npm test clients), installed only when missing.
deps:
	@tools/install-deps.sh
deps-test:
	@tools/install-deps.sh --test
	@tests/node/node.sh --ensure-installed >/dev/null

# The main job: the gateway with its embedded defaults. With no local model yet (none
# pulled, none in ./models), SmolLM3 is pulled first; without network the gateway still
# starts, and its start-up block says what it serves and how to get a model.
# SERVE_ARGS adds options (`make serve SERVE_ARGS="--listen 0.0.0.0:8080"`).
serve: deps
	$(MAKE) $(BUILD)/smolgate
	@if [ -z "$$(ls models/*.gguf 2>/dev/null)" ] && [ "$$($(BUILD)/smolgate list 2>/dev/null | wc -l)" -le 1 ]; then \
	  echo "smolgate: no local model yet: pulling SmolLM3 (smolgate pull smollm3)"; \
	  $(BUILD)/smolgate pull smollm3 || echo "smolgate: could not pull SmolLM3; starting without it"; \
	fi
	$(BUILD)/smolgate serve $(SERVE_ARGS)
all: $(BUILD)/smolgate $(TEST_BIN) $(BENCH_BIN) compile_commands.json

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/gen/web_assets.c: $(WEB_SRC) tools/embed.sh
	@mkdir -p $(dir $@)
	tools/embed.sh $@ $(WEB_SRC)

$(BUILD)/obj/gen/web_assets.o: $(BUILD)/gen/web_assets.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libsmolgate.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/smolgate: $(BUILD)/obj/src/cli/main.o $(BUILD)/libsmolgate.a
	$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/obj/tests/testutil.o $(BUILD)/libsmolgate.a
	@mkdir -p $(dir $@)
	$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libsmolgate.a
	@mkdir -p $(dir $@)
	$(CC) $(LDSAN) -pthread -o $@ $^ $(LDLIBS)

# The test suite: sanitizer build, unit tests, then end-to-end scripts.
test: deps-test
	$(MAKE) SAN=1 all
	$(MAKE) all
	tests/run.sh

check: test

bench: all
	bench/run.sh

# compile_commands.json for clangd / clang-tidy, written from the same flags make uses.
compile_commands.json: Makefile $(LIB_SRC) src/cli/main.c $(TEST_SRC) $(BENCH_SRC)
	@tools/compdb.sh "$(CC)" "$(CFLAGS)" \
	   $(LIB_SRC) src/cli/main.c $(TEST_SRC) tests/testutil.c $(BENCH_SRC) > $@.tmp && mv $@.tmp $@

clean:
	rm -rf build build-san compile_commands.json

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
