//! Log lines as production writes them (JSON, here at debug level to see as much as possible):
//! every line of one request carries its request id and trace id, and a sign-up, login, renew and
//! logout leave no password, token, verification code or full email address in any line.

mod support;

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use platform::config::{LogFormat, TelemetryConfig};
use proto::auth::v1::{
    CreateUserRequest, LoginUserRequest, LogoutRequest, RenewAccessTokenRequest,
};
use serde_json::Value;
use support::Mesh;

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

fn with_headers<T>(msg: T, headers: &[(&'static str, &str)]) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_sign_up_login_renew_and_logout_hold_no_secrets_and_join_by_request_and_trace() {
    let logs = captured();
    let m = Mesh::start().await;
    let mut auth = m.auth_client.clone();

    let password = "Sup3r-Secret-Passw0rd!";
    let email = "carol.secret@example.com";
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    auth.create_user(with_headers(
        CreateUserRequest {
            username: "carol".into(),
            full_name: "Carol Example".into(),
            email: email.into(),
            password: password.into(),
        },
        &[
            ("x-request-id", "req-signup-1"),
            ("traceparent", traceparent),
        ],
    ))
    .await
    .expect("sign up");
    let wrong = auth
        .login_user(LoginUserRequest {
            username: "carol".into(),
            password: format!("{password}-wrong"),
        })
        .await;
    assert!(wrong.is_err());
    let login = auth
        .login_user(with_headers(
            LoginUserRequest {
                username: "carol".into(),
                password: password.into(),
            },
            &[("x-request-id", "req-login-1")],
        ))
        .await
        .expect("login")
        .into_inner();
    let renewed = auth
        .renew_access_token(RenewAccessTokenRequest {
            refresh_token: login.refresh_token.clone(),
        })
        .await
        .expect("renew")
        .into_inner();
    auth.logout(test_support::authed(
        LogoutRequest {},
        &renewed.access_token,
    ))
    .await
    .expect("logout");

    // The relay publishes the sign-up event (with its secret code) in the background: wait for it,
    // so its log lines are part of what is checked.
    let secret_code: String =
        sqlx::query_scalar("SELECT secret_code FROM auth.verify_emails WHERE username = 'carol'")
            .fetch_one(&m.db.pool)
            .await
            .expect("the verification code");
    for _ in 0..300 {
        let unpublished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM auth.outbox WHERE published_at IS NULL")
                .fetch_one(&m.db.pool)
                .await
                .unwrap();
        if unpublished == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    m.stop().await;

    let all = lines(&logs);
    assert!(all.len() > 10, "expected debug logs, got {}", all.len());
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    for (what, secret) in [
        ("password", password),
        ("access token", login.access_token.as_str()),
        ("refresh token", login.refresh_token.as_str()),
        ("renewed access token", renewed.access_token.as_str()),
        ("renewed refresh token", renewed.refresh_token.as_str()),
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

    // Every line of a request carries its request id and the trace id of its traceparent.
    let of = |rid: &str| -> Vec<&Value> {
        all.iter()
            .filter(|l| l["request_id"].as_str() == Some(rid))
            .collect()
    };
    let signup = of("req-signup-1");
    assert!(
        !signup.is_empty(),
        "no line carries the sign-up's request id"
    );
    for l in &signup {
        assert_eq!(l["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{l}");
        let span_id = l["span_id"].as_str().expect("span_id");
        assert_eq!(span_id.len(), 16, "{l}");
        assert_ne!(
            span_id, "00f067aa0ba902b7",
            "the server span is a child: {l}"
        );
        assert_eq!(l["service"], "mesh-tests");
    }
    // Without a traceparent, the request starts a trace of its own, the same on all its lines.
    let login_lines = of("req-login-1");
    assert!(
        !login_lines.is_empty(),
        "no line carries the login's request id"
    );
    let trace = login_lines[0]["trace_id"].as_str().expect("trace_id");
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(login_lines.iter().all(|l| l["trace_id"] == trace));
}
