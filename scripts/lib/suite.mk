# scripts/test's schedule, run by one `make -k -j JOBS`: the two builds share its job slots, so that they compile
# side by side without running more compilers than there are cores (two builds at -j2 each ran four compilers on
# two cores, and each compiler took about a third more CPU time: docs/testing.md). Each build's tests start
# when it ends. The Release build prints as it goes; the other steps write their logs to files, printed when the
# step ends (scripts/lib/step).
#
# Variables: RELEASE and SANITIZE (the configured build folders), JOBS (ctest's parallelism).

STEP := scripts/lib/step
# ctest and the builds its tests start (the consumer projects) are outside the job server: they must not see it.
CTEST := env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL ctest

.PHONY: all release-build sanitizer-build release-tests sanitizer-tests
all: release-tests sanitizer-tests

# The recipes name $(MAKE), so the builds' own makes join this make's job server.
release-build:
	+@$(STEP) "Release build" - $(MAKE) --no-print-directory -C $(RELEASE)

sanitizer-build:
	+@$(STEP) "sanitizer build" $(SANITIZE)/build.log $(MAKE) --no-print-directory -C $(SANITIZE)

release-tests: release-build
	@$(STEP) "Release tests" $(RELEASE)/ctest.log $(CTEST) --test-dir $(RELEASE) --output-on-failure -j $(JOBS)

sanitizer-tests: sanitizer-build
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(STEP) "AddressSanitizer + UndefinedBehaviorSanitizer tests" $(SANITIZE)/ctest.log \
	  $(CTEST) --test-dir $(SANITIZE) --output-on-failure -j $(JOBS)
