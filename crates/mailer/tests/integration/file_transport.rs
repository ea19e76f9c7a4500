//! The development transport: each email becomes an `.eml` file a developer can open.

use std::time::Duration;

use crate::support::*;
use mailer::config::{TransportConfig, TransportKind};
use test_support::TestRedis;

#[tokio::test]
async fn the_file_transport_writes_an_eml_file_with_the_link() {
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await; // unused: the file transport never dials out
    let dir = tempfile::tempdir().unwrap();
    let mail_dir = dir.path().join("var/mail"); // created by the mailer
    let mut cfg = smtp_config(&redis, &sink, "dev");
    cfg.transport = TransportConfig {
        kind: TransportKind::File,
        file_dir: mail_dir.clone(),
        send_timeout_ms: 4_000,
        ..TransportConfig::default()
    };
    let mailer = start(cfg).await;

    let ev = TestEvent::new(7);
    publish(&redis, "user.created", &ev).await;
    let file = eventually("an .eml file", Duration::from_secs(30), || async {
        std::fs::read_dir(&mail_dir).ok()?.find_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "eml").then_some(p)
        })
    })
    .await;
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(raw.contains(&format!("<{}>", ev.email)), "{raw}");
    let link = format!(
        "{BASE_URL}/v1/verify_email?email_id={}&secret_code={}",
        ev.email_id, ev.secret_code
    );
    assert!(raw.contains(&link), "the link is readable as is: {raw}");
    let (email_id, code) = link_in(&raw);
    assert_eq!(email_id, ev.email_id);
    assert_eq!(code, ev.secret_code);
    assert!(sink.received().is_empty());
    mailer.stop().await.unwrap();
    assert_eq!(
        std::fs::read_dir(&mail_dir).unwrap().count(),
        1,
        "one file per email"
    );
}
