#!/bin/sh
# expect_abort.sh COMMAND...: runs an mpirun command line of abort_on_throw and passes when the job failed after
# rank 1 threw, with no rank past the barrier (a failure for another reason, such as mpirun refusing to start,
# does not count). ctest's timeout catches a hang.
output=$("$@" 2>&1)
status=$?
printf '%s\n' "$output"
if [ "$status" -eq 0 ]; then echo "expect_abort: the job exited with status 0, expected a failure"; exit 1; fi
if ! printf '%s\n' "$output" | grep -q "rank 1 throws"; then
  echo "expect_abort: rank 1 never reached its throw, so the job failed for another reason"; exit 1
fi
if printf '%s\n' "$output" | grep -q "got past the barrier"; then
  echo "expect_abort: a waiting rank got past the barrier"; exit 1
fi
echo "expect_abort: the job ended with status $status after rank 1 threw"
