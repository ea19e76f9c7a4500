//! Tests only: see `tests/`. The whole mesh (auth, accounts, transfers) runs in one test process
//! against real PostgreSQL and Redis, and the tests look at it the way an on-call engineer would:
//! `/metrics`, log lines and traces.
