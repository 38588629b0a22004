#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and property tests, and the end-to-end tests
# against a real slapd, a real Samba AD DC and two real SCIM servers (installed by
# scripts/setup.sh): every suite against scim2-server, then the suites about what reaches the
# target (sync, crash, faults, change feeds, service) once more against django-scim2.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets
DIRBRIDGE_TEST_SCIM=django cargo test --locked \
    --test e2e_sync --test e2e_crash --test e2e_faults --test e2e_feed --test e2e_daemon
