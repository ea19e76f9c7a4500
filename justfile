# Recipes wrap the two commands the README documents, for people who have `just`.

# Run the whole mesh (migrations, all five services, mail in var/mail) until Ctrl-C.
up:
    cargo xtask up

# Run every test (needs PostgreSQL and Redis on localhost).
test:
    cargo test --workspace

# Create the database if missing and apply migrations.
migrate:
    cargo xtask migrate

# Benchmark: ours vs the pgbench ceiling and the naive peer (release build, a few minutes).
bench:
    cargo xtask bench

fmt:
    cargo fmt --all

# Format check and lints; the lint rules are `[workspace.lints]` in Cargo.toml, -D warnings as in CI.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# What CI runs.
ci:
    bash .ci/run
