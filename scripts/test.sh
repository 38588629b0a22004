#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and property tests, and the end-to-end tests
# against a real slapd, a real Samba AD DC and two real SCIM servers (installed by
# scripts/setup.sh): every suite against scim2-server, then the suites about what reaches the
# target (sync, crash, faults, change feeds, service, HA with 3 kill rounds) once more against django-scim2.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets --no-run

# The 20,000-user kill -9 test and the django-scim2 round spend their time waiting for one
# single-threaded Python server each: they run beside the rest (~7 minutes of ~15 otherwise
# run one after the other), their output printed after it, every failure failing the suite.
side_log=$(mktemp)
side=
# Stopped (Ctrl-C, a timeout), the suite stops what runs beside it too: that job has a process
# group of its own (set -m), its servers with it.
stop_side() {
    if [ -n "$side" ] && kill -0 "$side" 2>/dev/null; then
        kill -- "-$side" 2>/dev/null || true
    fi
    rm -f "$side_log"
}
trap stop_side EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
set -m
(
    status=0
    cargo test --locked --test e2e_crash_scale || status=$?
    DIRBRIDGE_TEST_SCIM=django DIRBRIDGE_HA_ROUNDS=3 cargo test --locked \
        --test e2e_sync --test e2e_crash --test e2e_faults --test e2e_feed --test e2e_daemon \
        --test e2e_ha \
        || status=$?
    exit "$status"
) </dev/null >"$side_log" 2>&1 &
side=$!
set +m
main_status=0
cargo test --locked --all-targets -- \
    --skip kill_9_at_random_points_of_a_20000_user_first_sync || main_status=$?
side_status=0
wait "$side" || side_status=$?
echo "---- beside the rest: the 20,000-user crash test, then the django-scim2 round ----"
cat "$side_log"
if [ "$main_status" -ne 0 ] || [ "$side_status" -ne 0 ]; then
    echo "test.sh: failed (the main round: exit $main_status; beside it: exit $side_status)" >&2
    exit 1
fi
