//! CPU time per process group over one scenario, read from `/proc` (utime + stime): the bench's
//! steadiest figure on shared cores, where throughput swings with whatever else runs.
//!
//! Groups: each service (its pid), the PostgreSQL backends serving the bench database (found by
//! their process title, which names the database; sampled every 100 ms, so a backend that exits
//! mid-scenario loses at most its last 100 ms), PostgreSQL's shared helpers (checkpointer, WAL
//! writer, background writer: they also serve other databases of the instance), and the client
//! (loadgen or pgbench, a child of this process: exact, from `getrusage(RUSAGE_CHILDREN)`). The
//! whole machine's busy time (`/proc/stat`) is read too, so a figure shows how much else ran.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of a process, in clock ticks.
fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command may hold spaces and parentheses: fields start after the last ')'
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// (busy, total) ticks of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// CPU seconds of this process's waited-for children so far.
pub fn children_secs() -> f64 {
    // SAFETY: rusage is plain data (integers and timevals); all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes into the struct we pass, which lives for the call.
    unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Which PostgreSQL process a pid is: `Some(true)` a backend of `database`, `Some(false)` a shared
/// helper, `None` neither.
fn postgres_kind(pid: u32, database: &str) -> Option<bool> {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let title = String::from_utf8_lossy(&cmd);
    let title = title.trim_end_matches('\0');
    let rest = title.strip_prefix("postgres: ")?;
    if rest.split_whitespace().any(|t| t == database) {
        return Some(true);
    }
    ["checkpointer", "walwriter", "background writer"]
        .iter()
        .any(|h| rest.contains(h))
        .then_some(false)
}

#[derive(Default)]
struct Seen {
    first: u64,
    last: u64,
}

pub const BACKENDS: &str = "postgres backends";
pub const PG_SHARED: &str = "postgres shared (checkpointer, WAL writer, bgwriter)";
pub const MACHINE: &str = "whole machine (busy)";

pub struct Window {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<BTreeMap<String, f64>>,
    children_at_start: f64,
}

/// Starts sampling `services` (label, pid) and the PostgreSQL processes of `database`.
pub fn start(services: Vec<(String, u32)>, database: String) -> Window {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let children_at_start = children_secs();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut pg: BTreeMap<u32, (bool, Seen)> = BTreeMap::new();
        let mut svc: BTreeMap<u32, Seen> = BTreeMap::new();
        let scan = |pg: &mut BTreeMap<u32, (bool, Seen)>, first_scan: bool| {
            let Ok(dir) = std::fs::read_dir("/proc") else {
                return;
            };
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if let Some((_, seen)) = pg.get_mut(&pid) {
                    if let Some(t) = proc_ticks(pid) {
                        seen.last = t;
                    }
                    continue;
                }
                if let Some(ours) = postgres_kind(pid, &database) {
                    let t = proc_ticks(pid).unwrap_or(0);
                    // a process there from the start counts from now; one born during the
                    // window counts from zero
                    let first = if first_scan { t } else { 0 };
                    pg.insert(pid, (ours, Seen { first, last: t }));
                }
            }
        };
        for (_, pid) in &services {
            let t = proc_ticks(*pid).unwrap_or(0);
            svc.insert(*pid, Seen { first: t, last: t });
        }
        let machine_start = machine_ticks();
        scan(&mut pg, true);
        let _ = ready_tx.send(());
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            scan(&mut pg, false);
        }
        for (pid, seen) in svc.iter_mut() {
            if let Some(t) = proc_ticks(*pid) {
                seen.last = t;
            }
        }
        scan(&mut pg, false);
        let machine_end = machine_ticks();
        let hz = ticks_per_sec();
        let mut out = BTreeMap::new();
        for (label, pid) in &services {
            let s = &svc[pid];
            *out.entry(label.clone()).or_insert(0.0) += (s.last - s.first) as f64 / hz;
        }
        for (ours, s) in pg.values() {
            let label = if *ours { BACKENDS } else { PG_SHARED };
            *out.entry(label.to_owned()).or_insert(0.0) +=
                s.last.saturating_sub(s.first) as f64 / hz;
        }
        out.insert(
            MACHINE.to_owned(),
            machine_end.0.saturating_sub(machine_start.0) as f64 / hz,
        );
        out
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    Window {
        stop,
        thread,
        children_at_start,
    }
}

impl Window {
    /// Stops sampling; CPU seconds per group, the client's under `client`.
    pub fn finish(self, client: &str) -> BTreeMap<String, f64> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = self.thread.join().unwrap_or_default();
        out.insert(client.to_owned(), children_secs() - self.children_at_start);
        out
    }
}

/// The 1-, 5- and 15-minute load averages, as /proc/loadavg has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
