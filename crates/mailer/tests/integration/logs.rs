//! What the mailer logs (JSON, as in production): its lines continue the trace of the request that
//! caused the event, and hold neither the recipient's address nor the verification code.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::support::*;
use platform::config::{LogFormat, TelemetryConfig};
use test_support::{TestRedis, ran_in_own_process};

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn log_lines_continue_the_events_trace_and_hold_no_address_or_code() {
    if ran_in_own_process("logs::log_lines_continue_the_events_trace_and_hold_no_address_or_code") {
        return;
    }
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink_logs = logs.clone();
    let cfg = TelemetryConfig {
        log_format: LogFormat::Json,
        log_level: "debug,h2=info,hyper=info,hyper_util=info,tower=info,reqwest=info".into(),
        ..TelemetryConfig::default()
    };
    platform::telemetry::init_with_writer("mailer-test", &cfg, move || Sink(sink_logs.clone()));

    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    sink.reject_next(1); // a failed attempt logs too
    let mailer = start(smtp_config(&redis, &sink, "m1")).await;
    let ev = TestEvent::new(1);
    publish(&redis, "user.created", &ev).await; // traceparent 00-4bf92f35…-00f067aa…-01
    sink.wait_for(1, Duration::from_secs(30)).await;
    mailer.stop().await.unwrap();

    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let sent = lines
        .iter()
        .find(|l| l["message"] == "email sent")
        .unwrap_or_else(|| panic!("no 'email sent' line in:\n{text}"));
    assert_eq!(
        sent["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{sent}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "send failed"
            && l["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"),
        "{text}"
    );
    assert!(!text.contains(&ev.email), "address logged:\n{text}");
    assert!(!text.contains(&ev.secret_code), "code logged:\n{text}");
}
