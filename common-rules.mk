# Rules shared by every Makefile.am in the tree (include it first).

AM_CPPFLAGS = -I$(top_srcdir)/lib -I$(top_builddir)
AM_CFLAGS = $(WARNINGS_CFLAGS) $(PTHREAD_CFLAGS)

# --enable-sanitizers: programs get ASan+UBSan, modules that nbdkit
# loads get UBSan only (see configure.ac for why).
PROGRAM_CFLAGS = $(AM_CFLAGS) $(SANITIZER_CFLAGS)
PROGRAM_LINK_FLAGS = $(SANITIZER_CFLAGS)
MODULE_CFLAGS = $(AM_CFLAGS) $(MODULE_SANITIZER_CFLAGS)

# Man pages are written in POD next to the source they document and
# rendered at build time; nbdkit's plugins and filters live in section 1.
SUFFIXES = .pod .1 .3
POD2MAN_FLAGS = --center="r3map" --release="r3map-$(VERSION)" --utf8
.pod.1:
	$(AM_V_GEN)$(POD2MAN) $(POD2MAN_FLAGS) --section=1 \
	  --name="$$(basename $@ .1)" $< > $@-t && mv $@-t $@
.pod.3:
	$(AM_V_GEN)$(POD2MAN) $(POD2MAN_FLAGS) --section=3 \
	  --name="$$(basename $@ .3)" $< > $@-t && mv $@-t $@

# nbdkit loads only plugin_init/filter_init; the version scripts hide
# everything else so that two modules never clash on a symbol.
MODULE_PLUGIN_FLAGS = -module -avoid-version -shared $(MODULE_SANITIZER_CFLAGS) \
	-Wl,--version-script=$(top_srcdir)/plugins/plugins.syms
MODULE_FILTER_FLAGS = -module -avoid-version -shared $(MODULE_SANITIZER_CFLAGS) \
	-Wl,--version-script=$(top_srcdir)/filters/filters.syms
