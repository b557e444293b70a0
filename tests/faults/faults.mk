# Fault-injection suite (issue 6), included from the top-level Makefile after
# the project libraries and PROGRAMS are defined:
#   make faults        full run (< 10 min): a table and one JSON line, exit 1 on a violation
#   make faults-quick  the same scenarios, shorter (about 2 min)
# calendar-faultprobe needs only libc and pthreads (no project library).
bin/calendar-faultprobe: tests/faults/faultprobe.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC+LD   $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< -lpthread

.PHONY: faults faults-quick
faults: $(PROGRAMS) bin/calendar-faultprobe
	$(Q)tests/faults/run.sh

faults-quick: $(PROGRAMS) bin/calendar-faultprobe
	$(Q)tests/faults/run.sh --quick
