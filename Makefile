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
		   -fstack-protector-strong -D_FORTIFY_SOURCE=2 -MMD -MP
override LDFLAGS += -Wl,-z,relro,-z,now

B = build
# The pure parts: unit-tested and fuzzed without a network or a filesystem.
PURE_SRCS = src/answer.c src/options.c src/runner.c src/token.c
SRCS      = $(PURE_SRCS) src/container.c src/flow.c src/forge.c src/log.c src/main.c \
	    src/output.c src/secret.c src/wipe_alloc.c
OBJS      = $(SRCS:src/%.c=$(B)/%.o)
UNIT      = $(patsubst tests/unit/%.c,$(B)/%,$(wildcard tests/unit/test_*.c))

all: $(PROG)

$(PROG): $(OBJS)
	$(if $(DEPS_LIBS),,$(error pkg-config finds no libcurl or jansson: run 'make deps', or install libcurl4-openssl-dev libjansson-dev pkg-config))
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(DEPS_LIBS)

$(B)/%.o: src/%.c | $(B)
	$(CC) $(CFLAGS) $(DEPS_CFLAGS) -c -o $@ $<

$(B)/test_%: tests/unit/test_%.c $(PURE_SRCS:src/%.c=$(B)/%.o) | $(B)
	$(CC) $(CFLAGS) $(DEPS_CFLAGS) -o $@ $< $(PURE_SRCS:src/%.c=$(B)/%.o) $(CMOCKA_LIBS) $(DEPS_LIBS)

# The same program with AddressSanitizer and UndefinedBehaviorSanitizer.
$(B)/asan/$(PROG): $(SRCS) $(wildcard include/*.h) | $(B)
	@mkdir -p $(B)/asan
	$(CC) $(CFLAGS) $(DEPS_CFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
		-fno-sanitize-recover=all -o $@ $(SRCS) $(DEPS_LIBS)

$(B):
	@mkdir -p $(B)

deps:
	@sh tests/deps.sh

check: deps
	@$(MAKE) --no-print-directory $(PROG) $(UNIT) $(B)/asan/$(PROG)
	@$(PYTHON) tests/check.py --binary ./$(PROG) --asan-binary $(B)/asan/$(PROG) $(UNIT)

demo: deps
	@$(MAKE) --no-print-directory $(PROG)
	@$(PYTHON) tests/demo.py ./$(PROG)

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

.PHONY: all check demo deps install uninstall lint clean

-include $(OBJS:.o=.d)
