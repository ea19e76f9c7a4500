//! Trace export never holds a service up: with the collector unreachable, calls are answered and
//! the services stop promptly (the final flush is bounded).

use std::time::{Duration, Instant};

use platform::config::{LogFormat, TelemetryConfig};
use proto::auth::v1::CreateUserRequest;

use crate::support::{self, Mesh};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_neither_fails_calls_nor_delays_shutdown() {
    // it installs the global subscriber and trace exporter: alone in a process of its own
    if support::ran_in_own_process(
        "collector_down::an_unreachable_collector_neither_fails_calls_nor_delays_shutdown",
    ) {
        return;
    }
    // nothing listens on a port bound and dropped at once
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    platform::telemetry::init_with_writer(
        "mesh-tests",
        &TelemetryConfig {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            otlp_endpoint: Some(format!("http://127.0.0.1:{port}")),
        },
        std::io::sink,
    );
    assert!(platform::telemetry::exporting());

    let m = Mesh::start().await;
    m.auth_client
        .clone()
        .create_user(CreateUserRequest {
            username: "frank".into(),
            full_name: "Frank Example".into(),
            email: "frank@example.com".into(),
            password: "correct-horse-42".into(),
        })
        .await
        .expect("the call is answered while export fails");
    let started = Instant::now();
    m.stop().await;
    // three services, each flushing at most 5 s; generous for a loaded machine
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "stopping took {:?}",
        started.elapsed()
    );
}
