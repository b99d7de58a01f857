#!/usr/bin/env bash
# The test suite, as CI runs it: set-up, format check, then every test (the end-to-end ones
# start their own tansu broker on a free port).
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo nextest run --workspace --no-fail-fast "$@"
