//! A burst of logins must not leave the auth service holding hundreds of MB: at most
//! `password.max_concurrent_hashes` argon2id blocks (19 MiB each) are live at once, and freed
//! blocks go back to the OS. The peak resident size is the whole process's, and this binary runs
//! every other test too, so the test runs this binary again, filtered to itself: the child does
//! the hashing and checks its own peak with no other test's hashing in its process, and the
//! parent asserts that the child passed.

use auth::{config::PasswordConfig, domain::Hasher};

/// The test's name as the test harness knows it (the binary's name left out).
const TEST_NAME: &str = "hash_memory::a_burst_of_logins_keeps_memory_to_the_hashes_allowed_at_once";

fn kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_keeps_memory_to_the_hashes_allowed_at_once() {
    if test_support::ran_in_own_process(TEST_NAME) {
        return;
    }

    // the child: only this test runs in this process
    let cfg = PasswordConfig::default();
    assert_eq!(cfg.max_concurrent_hashes, 4);
    let hasher = Hasher::new(&cfg).unwrap();
    let stored = hasher
        .hash(&auth::domain::Password::parse("correct horse").unwrap())
        .await
        .unwrap();
    let before = kib("VmRSS:");
    let mut callers = Vec::new();
    for _ in 0..16 {
        let hasher = hasher.clone();
        let stored = stored.clone();
        callers.push(tokio::spawn(async move {
            for _ in 0..4 {
                assert!(hasher.verify("correct horse", Some(&stored)).await);
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    let peak = kib("VmHWM:");
    let after = kib("VmRSS:");
    // 4 × 19 MiB live at most, plus the test's own memory; without the bound it was > 700 MB
    assert!(
        peak < before + 4 * 19_456 + 40_000,
        "peak {peak} kB, before {before} kB"
    );
    assert!(
        after < before + 40_000,
        "still resident after: {after} kB, before {before} kB"
    );
}
