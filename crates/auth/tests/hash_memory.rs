//! A burst of logins must not leave the auth service holding hundreds of MB: at most
//! `password.max_concurrent_hashes` argon2id blocks (19 MiB each) are live at once, and freed
//! blocks go back to the OS. Its own test binary, so no other test's hashing shares the process.

use auth::{config::PasswordConfig, domain::Hasher};

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
