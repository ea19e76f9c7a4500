//! Running one test alone in a process of its own, inside the one test binary: a test that
//! installs the global tracing subscriber or reads the process-wide metrics recorder must not see
//! (or change) what the other tests in the binary do at the same time.

/// Set in the child process that runs one test alone.
const OWN_PROCESS: &str = "MESH_TESTS_OWN_PROCESS";

/// Runs test `name` (its path in this binary, `logs::…`) alone in a child process of this test
/// binary and fails if it fails there; `true` when it did. `false` when already in that child:
/// the caller runs its body then.
pub fn ran_in_own_process(name: &str) -> bool {
    if std::env::var_os(OWN_PROCESS).is_some() {
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(OWN_PROCESS, "1")
        .output()
        .expect("re-running the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // exactly one test ran: a misspelt name would otherwise run nothing and pass
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} failed in its own process ({}):\n{stdout}\n{stderr}",
        out.status
    );
    true
}
