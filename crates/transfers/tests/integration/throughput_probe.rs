//! A quick, ignored throughput probe of the batcher's settings, with the service in-process and
//! no gateway (the real numbers come from `cargo xtask bench`). For tuning `batch.*`:
//!
//! ```text
//! cargo test --release -p transfers --test integration -- --ignored --nocapture throughput_probe
//! ```
//!
//! It prints, per setting, transfers/s and p99 latency at 32 clients, spread over 200 accounts
//! (uniform) and all into one account (hot).

use std::time::{Duration, Instant};

use crate::support::App;
use proto::transfers::v1::{
    CreateTransferRequest, transfers_service_client::TransfersServiceClient,
};
use test_support::authed;
use tonic::transport::Channel;
use transfers::config::Config;

const CLIENTS: usize = 32;

/// A named change to the service's config.
type Setting = (&'static str, fn(&mut Config));
const SECS: u64 = 4;

/// Transfers/s and p99 ms of `CLIENTS` closed-loop clients for `SECS` seconds.
async fn measure(
    client: TransfersServiceClient<Channel>,
    accounts: &[(i64, String)],
    hot: Option<i64>,
) -> (f64, f64) {
    let stop = Instant::now() + Duration::from_secs(SECS);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = client.clone();
        let accounts = accounts.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c * 7_919;
            while Instant::now() < stop {
                i += 1;
                let (from, token) = &accounts[i % accounts.len()];
                let to = hot.unwrap_or(accounts[(i * 31 + 1) % accounts.len()].0);
                if to == *from {
                    continue;
                }
                let request = CreateTransferRequest {
                    from_account_id: *from,
                    to_account_id: to,
                    amount: 1,
                    currency: "USD".into(),
                    request_id: String::new(),
                    ..Default::default()
                };
                let started = Instant::now();
                if client.create_transfer(authed(request, token)).await.is_ok() {
                    latencies.push(started.elapsed().as_secs_f64());
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by(f64::total_cmp);
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or(0.0);
    (all.len() as f64 / SECS as f64, p99 * 1_000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a manual probe; run in release"]
async fn probe_batch_settings() {
    let app = App::start().await;
    let mut accounts = Vec::new();
    for i in 0..200 {
        let owner = format!("probe_{i}");
        let id = app.open(&owner, "USD").await;
        app.deposit(id, 1_000_000, "USD").await;
        accounts.push((id, app.token(&owner)));
    }
    let hot = app.open("hot", "USD").await;
    let settings: [Setting; 6] = [
        ("batching off", |c| c.batch.enabled = false),
        ("defaults", |_| {}),
        ("hold on", |c| c.batch.hold_conflicting = true),
        ("window 0", |c| c.batch.window_us = 0),
        ("in flight 1", |c| c.batch.max_in_flight = 1),
        ("in flight 8", |c| c.batch.max_in_flight = 8),
    ];
    for (name, tweak) in settings {
        let (client, running) = app.replica(tweak).await;
        let (u, u99) = measure(client.clone(), &accounts, None).await;
        let (h, h99) = measure(client, &accounts, Some(hot)).await;
        println!("{name:14} uniform {u:7.0}/s p99 {u99:5.1} ms | hot {h:7.0}/s p99 {h99:5.1} ms");
        let _ = running.stop().await;
    }
    let report = app.reconcile().await;
    assert!(report.ok, "{:?}", report.violations);
}
