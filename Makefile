# kgx — plain Makefile. `make V=1` shows the commands.
#   make            build/bin/kgx-run and build/bin/fake-llama (the fake llama-server used by tests)
#   make test       build (plain + ASan/UBSan), bring up the sandbox database and the fake, run every test
#   make asan       ASan+UBSan build into build/asan/bin
#   make demo       sandbox database + fake LLM + samples/ -> backfill -> graph statistics
#   make install    PREFIX=/usr/local DESTDIR=
#   make deb        build/deb/kgx_VERSION_ARCH.deb with debhelper (packaging files in deploy/debian/)
#   make fresh-check  the README's commands in a new Debian 12 root (slow: not part of make test)
#   make clean
# Without make (a bare Debian 12): scripts/kgx demo | test | deb installs make and the rest first.

# The first pass makes sure the Debian packages are there (scripts/install-deps), then re-runs make
# with them: pkg-config must find the libraries before any rule is read.
ifeq ($(KGX_DEPS_CHECKED),)
.DEFAULT_GOAL := all
Makefile VERSION: ;
# the named goals are phony (bench/ and tests/ are directories) and phony goals take no pattern
# rule: each gets the pass-through explicitly; files (build/bin/t_x …) go through %
# Which packages (scripts/install-deps PROFILE): the demo gets only the build, the daemon and the
# sandbox; the test tool chain comes with test and its kin; fresh-check needs only debootstrap.
GOALS := all test demo asan bench reliability install clean unit deb fresh-check
deps_profile = $(if $(filter test asan reliability bench,$(1)),test,$(if $(filter deb,$(1)),deb,$(if $(filter demo,$(1)),demo,build)))
.PHONY: $(GOALS)
fresh-check:
	@scripts/fresh-check
$(filter-out fresh-check,$(GOALS)):
	@scripts/install-deps $(call deps_profile,$@)
	@$(MAKE) --no-print-directory KGX_DEPS_CHECKED=1 $@
%:
	@scripts/install-deps build
	@$(MAKE) --no-print-directory KGX_DEPS_CHECKED=1 $@
else

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR   = $(PREFIX)/bin
SHAREDIR = $(PREFIX)/share/kgx
DOCDIR   = $(PREFIX)/share/doc/kgx
MANDIR   = $(PREFIX)/share/man
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.1.0)

CC      ?= gcc
PKGS     = luajit libuv libcurl libpq
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))
WARN     = -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(PKG_CFLAGS) -Icore -Itests/unit -Ibuild/gen \
             -DKGX_VERSION='"$(VERSION)"' -DKGX_SHAREDIR='"$(SHAREDIR)"' -MMD -MP
LDLIBS   = $(PKG_LIBS) -lhttp_parser -lm

ifeq ($(V),1)
Q =
else
Q = @
endif

.SECONDARY:
CORE_SRC  = $(sort $(wildcard core/*.c))
LIB_SRC   = $(filter-out core/main.c,$(CORE_SRC))
FAKE_SRC  = $(sort $(wildcard tests/fake/*.c))
UNIT_SRC  = $(sort $(wildcard tests/unit/t_*.c))
IT_SRC    = $(sort $(wildcard tests/integration/it_*.c))
TEST_BINS = $(patsubst tests/unit/%.c,%,$(UNIT_SRC)) $(patsubst tests/integration/%.c,%,$(IT_SRC))

# $(call objs,BUILDDIR,SOURCES)
objs = $(patsubst %.c,$(1)/obj/%.o,$(2))

B  = build
BA = build/asan

.PHONY: all asan test test-quick demo install clean bench reliability check-unit deb
all: $(B)/bin/kgx-run $(B)/bin/fake-llama unit

unit: $(addprefix $(B)/bin/,$(TEST_BINS))

asan: $(BA)/bin/kgx-run $(BA)/bin/fake-llama $(addprefix $(BA)/bin/,$(TEST_BINS))

$(BA)/%: ALL_CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
$(BA)/%: LDFLAGS += -fsanitize=address,undefined

# the schema is kept as SQL and compiled in as a C string
build/gen/schema_sql.h: core/schema.sql.in
	@mkdir -p $(dir $@)
	$(Q)sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< > $@.tmp && mv $@.tmp $@
$(B)/obj/core/graph.o $(BA)/obj/core/graph.o: build/gen/schema_sql.h
# --adopt's SQL, the same way; core/names.c reads both templates for the identifiers they derive
build/gen/adopt_sql.h: core/adopt.sql.in
	@mkdir -p $(dir $@)
	$(Q)sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< > $@.tmp && mv $@.tmp $@
$(B)/obj/core/adopt.o $(BA)/obj/core/adopt.o: build/gen/schema_sql.h build/gen/adopt_sql.h
$(B)/obj/core/names.o $(BA)/obj/core/names.o: build/gen/schema_sql.h build/gen/adopt_sql.h

# one rule set per build directory
define build_rules
$(1)/obj/%.o: %.c
	@mkdir -p $$(dir $$@)
	@$(if $(Q),echo "  CC      $$<")
	$(Q)$$(CC) $$(ALL_CFLAGS) -c $$< -o $$@

$(1)/lib/libkgx.a: $(call objs,$(1),$(LIB_SRC))
	@mkdir -p $$(dir $$@)
	$(Q)rm -f $$@ && ar rcs $$@ $$^

$(1)/bin/kgx-run: $(1)/obj/core/main.o $(1)/lib/libkgx.a
	@mkdir -p $$(dir $$@)
	@$(if $(Q),echo "  LINK    $$@")
	$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)

$(1)/bin/fake-llama: $(call objs,$(1),$(FAKE_SRC))
	@mkdir -p $$(dir $$@)
	@$(if $(Q),echo "  LINK    $$@")
	$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)

$(1)/bin/t_%: $(1)/obj/tests/unit/t_%.o $(1)/lib/libkgx.a
	@mkdir -p $$(dir $$@)
	@$(if $(Q),echo "  LINK    $$@")
	$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)

$(1)/bin/it_%: $(1)/obj/tests/integration/it_%.o $(1)/lib/libkgx.a
	@mkdir -p $$(dir $$@)
	@$(if $(Q),echo "  LINK    $$@")
	$(Q)$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(eval $(call build_rules,$(B)))
$(eval $(call build_rules,$(BA)))

-include $(shell find build -name '*.d' 2>/dev/null)

# The whole suite: unit (C), lua, integration (real PostgreSQL+AGE + the fake), under prove.
# KGX_TEST_BUILD=plain runs it against the plain build instead of ASan/UBSan.
test: all asan
	$(Q)scripts/run-tests

demo: $(B)/bin/kgx-run $(B)/bin/fake-llama
	$(Q)scripts/demo

# build/deb/kgx_VERSION_ARCH.deb (debhelper; packaging files in deploy/debian/), checked by lintian
deb:
	$(Q)scripts/build-deb

bench: all
	$(Q)scripts/bench

reliability: all asan
	$(Q)scripts/reliability

install: $(B)/bin/kgx-run
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SHAREDIR)/prompts $(DESTDIR)$(SHAREDIR)/plugins \
	    $(DESTDIR)$(SHAREDIR)/systemd $(DESTDIR)$(DOCDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 0755 $(B)/bin/kgx-run $(DESTDIR)$(BINDIR)/kgx-run
	install -m 0644 prompts/*.lua $(DESTDIR)$(SHAREDIR)/prompts/
	install -m 0644 plugins/*.lua $(DESTDIR)$(SHAREDIR)/plugins/
	install -m 0644 deploy/systemd/* $(DESTDIR)$(SHAREDIR)/systemd/
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	-install -m 0644 docs/kgx-run.1 $(DESTDIR)$(MANDIR)/man1/kgx-run.1

clean:
	rm -rf build

endif
