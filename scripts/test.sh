#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and property tests, and the end-to-end tests
# against a real slapd and a real SCIM server (installed by scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets
