//! Log lines as production writes them (JSON, here at debug level to see as much as possible), of
//! the whole mesh (gateway, auth, accounts, transfers, mailer): every line of one request carries
//! its request id and trace id, and a sign-up, email verification, failed and good login, renew
//! and logout through the gateway leave no password, token, verification code or full email
//! address in any line.

use std::{
    collections::BTreeSet,
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use platform::config::{LogFormat, TelemetryConfig};
use serde_json::{Value, json};

use crate::support::{self, Mesh};

/// Everything every test in this binary logged.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let cfg = TelemetryConfig {
            log_format: LogFormat::Json,
            log_level: "debug,h2=info,hyper=info,hyper_util=info,tower=info,tonic=info,\
                        reqwest=info,rustls=info"
                .into(),
            otlp_endpoint: None,
        };
        platform::telemetry::init_with_writer("mesh-tests", &cfg, move || Sink(sink.clone()));
        logs
    })
    .clone()
}

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

fn lines(logs: &Mutex<Vec<u8>>) -> Vec<Value> {
    let text = String::from_utf8(logs.lock().unwrap().clone()).expect("UTF-8 logs");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_users_journey_hold_no_secrets_and_join_by_request_id_and_trace_id() {
    // it installs the global subscriber and reads every line logged in the process: alone in a process of its own
    if support::ran_in_own_process(
        "logs::logs_of_a_users_journey_hold_no_secrets_and_join_by_request_id_and_trace_id",
    ) {
        return;
    }
    let logs = captured();
    let m = Mesh::start().await;
    let gateway = m.start_gateway().await;
    let mail_dir = std::env::temp_dir().join(format!("mesh-mail-{}", uuid::Uuid::new_v4()));
    let mailer = m.start_mailer(mail_dir.clone()).await;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = |path: &str| format!("{}{path}", gateway.http_url());
    let ok = |what: &'static str| {
        move |r: reqwest::Response| async move {
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            assert!(status.is_success(), "{what}: {status} {body}");
            body
        }
    };

    let password = "Sup3r-Secret-Passw0rd!";
    let email = "carol.secret@example.com";
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    ok("sign up")(
        http.post(url("/v1/users"))
            .header("x-request-id", "req-signup-1")
            .header("traceparent", &traceparent)
            .json(&json!({"username": "carol", "full_name": "Carol Example",
                "email": email, "password": password}))
            .send()
            .await
            .unwrap(),
    )
    .await;

    // The mailer sends the verification email (a file here); the link's code verifies the user.
    let (email_id, secret_code): (i64, String) =
        sqlx::query_as("SELECT id, secret_code FROM auth.verify_emails WHERE username = 'carol'")
            .fetch_one(&m.db.pool)
            .await
            .expect("the verification code");
    let mut sent = false;
    for _ in 0..300 {
        if std::fs::read_dir(&mail_dir).is_ok_and(|mut d| d.next().is_some()) {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent, "the mailer wrote the verification email");
    ok("verify email")(
        http.get(url(&format!(
            "/v1/verify_email?email_id={email_id}&secret_code={secret_code}"
        )))
        .send()
        .await
        .unwrap(),
    )
    .await;

    let wrong = http
        .post(url("/v1/sessions"))
        .json(&json!({"username": "carol", "password": format!("{password}-wrong")}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let login = ok("login")(
        http.post(url("/v1/sessions"))
            .header("x-request-id", "req-login-1")
            .json(&json!({"username": "carol", "password": password}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let renewed = ok("renew")(
        http.post(url("/v1/tokens:renew"))
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let renewed_access = renewed["access_token"].as_str().unwrap().to_owned();
    let renewed_refresh = renewed["refresh_token"].as_str().unwrap().to_owned();
    ok("logout")(
        http.delete(url("/v1/sessions/current"))
            .bearer_auth(&renewed_access)
            .send()
            .await
            .unwrap(),
    )
    .await;

    mailer.stop().await.expect("mailer stops");
    gateway.stop().await.expect("gateway stops");
    m.stop().await;
    let _ = std::fs::remove_dir_all(&mail_dir);

    let all = lines(&logs);
    assert!(all.len() > 10, "expected debug logs, got {}", all.len());
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    for (what, secret) in [
        ("password", password),
        ("access token", access.as_str()),
        ("refresh token", refresh.as_str()),
        ("renewed access token", renewed_access.as_str()),
        ("renewed refresh token", renewed_refresh.as_str()),
        ("verification code", secret_code.as_str()),
        ("full email address", email),
    ] {
        assert!(!secret.is_empty());
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "the {what} is logged: {leaks:#?}");
    }
    assert!(
        !text.contains("v4.public."),
        "a PASETO token is logged somewhere"
    );

    // Every line of a request, in the gateway and in auth, carries its request id and the trace
    // id of the client's traceparent.
    let of = |rid: &str| -> Vec<&Value> {
        all.iter()
            .filter(|l| l["request_id"].as_str() == Some(rid))
            .collect()
    };
    let signup = of("req-signup-1");
    let span_names: BTreeSet<&str> = signup
        .iter()
        .filter_map(|l| l["span"]["name"].as_str())
        .collect();
    assert!(
        span_names.contains("http") && span_names.contains("grpc"),
        "the sign-up's lines come from the gateway (http) and auth (grpc): {span_names:?}"
    );
    for l in &signup {
        assert_eq!(l["trace_id"], trace, "{l}");
        let span_id = l["span_id"].as_str().expect("span_id");
        assert_eq!(span_id.len(), 16, "{l}");
        assert_ne!(
            span_id, "00f067aa0ba902b7",
            "the server spans are children: {l}"
        );
        assert_eq!(l["service"], "mesh-tests");
    }
    // The mailer's lines for that email are in the same trace.
    assert!(
        all.iter()
            .any(|l| l["span"]["name"] == "mailer.event" && l["trace_id"] == trace),
        "no mailer line in the sign-up's trace"
    );
    // Without a traceparent, the request starts a trace of its own, the same on all its lines.
    let login_lines = of("req-login-1");
    assert!(
        login_lines.len() >= 2,
        "the login's lines: {login_lines:#?}"
    );
    let login_trace = login_lines[0]["trace_id"].as_str().expect("trace_id");
    assert_eq!(login_trace.len(), 32);
    assert_ne!(login_trace, trace);
    assert!(login_lines.iter().all(|l| l["trace_id"] == login_trace));
}
