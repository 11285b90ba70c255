# hive-ci-prefetch
PROG       = hive-ci-prefetch
VERSION   := $(shell cat VERSION)

PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
MANDIR    ?= $(PREFIX)/share/man
PKG_CONFIG ?= pkg-config
CFLAGS    ?= -O2 -g
PYTHON    ?= python3

# Evaluated when a recipe runs, so that `make check` can install them first.
DEPS_CFLAGS = $(shell $(PKG_CONFIG) --cflags libcurl jansson)
DEPS_LIBS   = $(shell $(PKG_CONFIG) --libs libcurl jansson)
CMOCKA_LIBS = $(shell $(PKG_CONFIG) --libs cmocka)

WARNINGS = -Wall -Wextra -Wformat=2 -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	   -Wpointer-arith -Wcast-qual -Wundef -Wvla -Werror=implicit-function-declaration \
	   -Werror=format-security
override CFLAGS += -std=gnu11 -D_GNU_SOURCE -DVERSION='"$(VERSION)"' -Iinclude $(WARNINGS) \
		   -fstack-protector-strong -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3 -MMD -MP
override LDFLAGS += -Wl,-z,relro,-z,now

B = build
# What the fuzzers take apart: the forge's answers and .runner (pure).
FUZZ_SRCS = src/answer.c src/jsonutil.c src/runner.c src/token.c src/utf8.c
# The decisions, their sentences and the command line are pure too; the
# unit tests link everything else but main.c, whose I/O (files, the forge
# client) comes along with the state file's rules and the clean-up's judge.
PURE_SRCS = $(FUZZ_SRCS) src/decide.c src/options.c src/reason.c
UNIT_SRCS = $(PURE_SRCS) src/state.c src/atomic.c src/container.c src/fileio.c src/ghosts.c \
	    src/forge.c src/forge_api.c src/log.c src/peer.c src/runnerproto.c src/wipe_alloc.c
SRCS      = $(PURE_SRCS) src/atomic.c src/container.c src/fileio.c src/flow.c src/forge.c \
	    src/forge_api.c src/ghosts.c src/log.c src/main.c src/output.c src/peer.c \
	    src/runnerproto.c src/secret.c src/state.c src/wipe_alloc.c
OBJS      = $(SRCS:src/%.c=$(B)/%.o)
UNIT      = $(patsubst tests/unit/%.c,$(B)/%,$(wildcard tests/unit/test_*.c))
FUZZERS   = runner answer
REPLAYS   = $(FUZZERS:%=$(B)/replay_%)
SANITIZE  = -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_TIME ?= 30

all: $(PROG)

$(PROG): $(OBJS)
	$(if $(DEPS_LIBS),,$(error pkg-config finds no libcurl or jansson: run 'make deps', or install libcurl4-openssl-dev libjansson-dev pkg-config))
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(DEPS_LIBS)

$(B)/%.o: src/%.c | $(B)
	$(CC) $(CFLAGS) $(DEPS_CFLAGS) -c -o $@ $<

# Unit tests, corpus replays and a second build of the program run under
# AddressSanitizer and UndefinedBehaviorSanitizer, from objects compiled once.
SAN_OBJS  = $(SRCS:src/%.c=$(B)/san/%.o)

$(B)/san/%.o: src/%.c | $(B)
	@mkdir -p $(B)/san
	$(CC) $(CFLAGS) $(SANITIZE) $(DEPS_CFLAGS) -c -o $@ $<

$(B)/test_%: tests/unit/test_%.c $(UNIT_SRCS:src/%.c=$(B)/san/%.o) | $(B)
	$(CC) $(CFLAGS) $(SANITIZE) $(DEPS_CFLAGS) -o $@ $< $(UNIT_SRCS:src/%.c=$(B)/san/%.o) \
		$(CMOCKA_LIBS) $(DEPS_LIBS)

$(B)/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(FUZZ_SRCS:src/%.c=$(B)/san/%.o) | $(B)
	$(CC) $(CFLAGS) $(SANITIZE) $(DEPS_CFLAGS) -o $@ $< tests/fuzz/replay.c \
		$(FUZZ_SRCS:src/%.c=$(B)/san/%.o) $(DEPS_LIBS)

$(B)/json_check: tests/unit/json_check.c | $(B)
	$(CC) $(CFLAGS) $(DEPS_CFLAGS) -o $@ $< $(DEPS_LIBS)

# LD_PRELOAD shim for the integration tests: sleeps that overshoot.
$(B)/sleep_overshoot.so: tests/sleep_overshoot.c | $(B)
	$(CC) $(CFLAGS) -shared -fPIC -o $@ $< -ldl

# LD_PRELOAD shim for the integration tests: libcurl cannot be set up.
$(B)/curl_init_fails.so: tests/curl_init_fails.c | $(B)
	$(CC) $(CFLAGS) -shared -fPIC -o $@ $<

# The same program with the sanitizers, for a second integration run.
$(B)/asan/$(PROG): $(SAN_OBJS) | $(B)
	@mkdir -p $(B)/asan
	$(CC) $(CFLAGS) $(SANITIZE) -o $@ $(SAN_OBJS) $(DEPS_LIBS)

# libFuzzer targets (clang), each run for FUZZ_TIME seconds from the seed corpus.
fuzz:
	@mkdir -p $(B)/fuzz
	@for t in $(FUZZERS); do \
		clang $(filter-out -MMD -MP,$(CFLAGS)) -g -O1 -fsanitize=fuzzer,address,undefined $(DEPS_CFLAGS) \
			-o $(B)/fuzz/$$t tests/fuzz/fuzz_$$t.c $(FUZZ_SRCS) $(DEPS_LIBS) || exit 1; \
		mkdir -p $(B)/fuzz/corpus-$$t; \
		$(B)/fuzz/$$t -max_total_time=$(FUZZ_TIME) -max_len=4096 \
			$(B)/fuzz/corpus-$$t tests/fuzz/corpus/$$t || exit 1; \
	done

$(B):
	@mkdir -p $(B)

deps:
	@sh tests/deps.sh

# Jobs for the builds of make check (a make -j of its own wins).
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)

check: deps
	@$(MAKE) --no-print-directory $(if $(findstring j,$(firstword $(MAKEFLAGS))),,-j$(JOBS)) \
		$(PROG) $(UNIT) $(REPLAYS) $(B)/json_check $(B)/sleep_overshoot.so \
		$(B)/curl_init_fails.so $(B)/asan/$(PROG)
	@$(PYTHON) tests/check.py --binary ./$(PROG) --asan-binary $(B)/asan/$(PROG) $(UNIT) \
		$(foreach t,$(FUZZERS),--replay $(B)/replay_$(t)=tests/fuzz/corpus/$(t))

demo: deps
	@$(MAKE) --no-print-directory $(PROG)
	@$(PYTHON) tests/demo.py ./$(PROG)

# The floors the tool is measured against (bench/README.md), linked exactly
# as the tool is: same flags, same libcurl and jansson.
FLOORS = $(B)/floor_init $(B)/floor_client

$(B)/floor_%: bench/floor_%.c | $(B)
	$(CC) $(CFLAGS) $(DEPS_CFLAGS) $(LDFLAGS) -o $@ $< $(DEPS_LIBS)

bench: $(PROG) $(FLOORS)
	@$(PYTHON) bench/run.py --binary ./$(PROG) --floor-init $(B)/floor_init \
		--floor-client $(B)/floor_client

install: $(PROG)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(PROG) $(DESTDIR)$(BINDIR)/$(PROG)
	install -m 0644 man/$(PROG).8 $(DESTDIR)$(MANDIR)/man8/$(PROG).8

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/$(PROG) $(DESTDIR)$(MANDIR)/man8/$(PROG).8

lint:
	mandoc -Tlint -Wwarning man/$(PROG).8
	clang-format --dry-run --Werror src/*.c include/*.h tests/unit/*.c

clean:
	rm -rf $(B) $(PROG)

.PHONY: all bench check demo deps fuzz install uninstall lint clean

-include $(OBJS:.o=.d) $(SAN_OBJS:.o=.d) $(wildcard $(B)/test_*.d $(B)/replay_*.d)
