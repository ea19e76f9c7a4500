//! The gateway under faults: SIGTERM drains both doors (the gateway binary in a process of its
//! own; they keep serving for `server.shutdown_delay_ms` first), and an upstream lost mid-call is
//! an honest 503 `outcome_unknown`, never a 500.

use std::time::Duration;

use futures::future::join_all;
use platform::{config::ServerConfig, http::Readiness};
use proto::auth::v1::{self as pb, auth_service_server::AuthServiceServer};
use serde_json::json;
use test_support::process::{ServiceProcess, free_addr};

use crate::Echo;

/// How long the upstream takes with a `drain…` login: the calls are in hand at the signal.
pub const UPSTREAM_TAKES: Duration = Duration::from_millis(800);

/// The gateway's `server.shutdown_delay_ms`: after SIGTERM both doors keep serving this long.
const DELAY: Duration = Duration::from_millis(1_000);

const SECRET: &str = "gateway-test-secret";

async fn echo_upstream() -> test_support::Running {
    let server = ServerConfig {
        gateway_secret: Some(platform::config::GatewaySecret(SECRET.into())),
        ..ServerConfig::default()
    };
    test_support::spawn(|l, s| async move {
        let routes = tonic::service::Routes::new(AuthServiceServer::new(Echo));
        platform::serve_all(
            &server,
            l,
            routes,
            &[proto::service_names::AUTH],
            Readiness::new(),
            s,
        )
        .await
    })
    .await
}

/// The gateway binary: auth at `auth_url`, the other upstreams nowhere.
async fn gateway_process(
    auth_url: &str,
) -> (
    ServiceProcess,
    std::net::SocketAddr,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let (http, grpc, admin, nowhere) = (free_addr(), free_addr(), free_addr(), free_addr());
    let env: Vec<(String, String)> = [
        ("EDGE_GATEWAY_HTTP_ADDR", http.to_string()),
        ("EDGE_GATEWAY_GRPC_ADDR", grpc.to_string()),
        ("EDGE_GATEWAY_ADMIN_ADDR", admin.to_string()),
        ("EDGE_GATEWAY_UPSTREAMS__AUTH", auth_url.to_owned()),
        (
            "EDGE_GATEWAY_UPSTREAMS__ACCOUNTS",
            format!("http://{nowhere}"),
        ),
        (
            "EDGE_GATEWAY_UPSTREAMS__TRANSFERS",
            format!("http://{nowhere}"),
        ),
        ("EDGE_GATEWAY_RATE_LIMIT__PER_IP_PER_MINUTE", "0".to_owned()),
        ("EDGE_GATEWAY_SERVER__GATEWAY_SECRET", SECRET.to_owned()),
        ("EDGE_GATEWAY_SERVER__SHUTDOWN_GRACE_SECS", "10".to_owned()),
        (
            "EDGE_GATEWAY_SERVER__SHUTDOWN_DELAY_MS",
            DELAY.as_millis().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let process = ServiceProcess::start(env!("CARGO_BIN_EXE_edge-gateway"), &env, http).await;
    (process, http, grpc, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_http_and_grpc_call_in_hand_before_exiting() {
    let upstream = echo_upstream().await;
    let (mut gateway, http, grpc, admin) = gateway_process(&upstream.grpc_url()).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let channel = test_support::channel(grpc).await;

    let over_http = (0..16).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let resp = client
                .post(format!("http://{http}/v1/sessions"))
                .json(&json!({"username": format!("drain{i}"), "password": "right"}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u16, String>(resp.status().as_u16())
        })
    });
    let over_grpc = (0..16).map(|i| {
        let mut client = pb::auth_service_client::AuthServiceClient::new(channel.clone());
        tokio::spawn(async move {
            client
                .login_user(pb::LoginUserRequest {
                    username: format!("drain{i}"),
                    password: "right".into(),
                })
                .await
                .map(|_| ())
                .map_err(|e| format!("{:?} {}", e.code(), e.message()))
        })
    });
    let (over_http, over_grpc): (Vec<_>, Vec<_>) = (over_http.collect(), over_grpc.collect());
    // every call has reached the upstream, which holds it UPSTREAM_TAKES
    tokio::time::sleep(UPSTREAM_TAKES / 4).await;
    gateway.sigterm();
    let signalled = std::time::Instant::now();
    tokio::time::sleep(UPSTREAM_TAKES / 4).await;
    let readyz = test_support::http_status(admin, "/readyz").await;
    // during the delay a new client (a new connection) is still served, over both doors
    let during_http = reqwest::Client::new()
        .post(format!("http://{http}/v1/sessions"))
        .json(&json!({"username": "during", "password": "right"}))
        .send();
    let during_grpc = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        pb::auth_service_client::AuthServiceClient::new(channel)
            .login_user(pb::LoginUserRequest {
                username: "during".into(),
                password: "right".into(),
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("{:?} {}", e.code(), e.message()))
    };
    let (during_http, during_grpc) = tokio::join!(during_http, during_grpc);
    tokio::time::sleep((DELAY + Duration::from_millis(200)).saturating_sub(signalled.elapsed()))
        .await;
    let new_connection = tokio::net::TcpStream::connect(http).await;
    let new_grpc_connection = tokio::net::TcpStream::connect(grpc).await;
    let http_answers = join_all(over_http).await;
    let grpc_answers = join_all(over_grpc).await;
    let ended = gateway.wait(Duration::from_secs(15)).await;

    for answer in http_answers {
        assert_eq!(answer.unwrap(), Ok(200), "an HTTP call in hand at SIGTERM");
    }
    for answer in grpc_answers {
        assert_eq!(answer.unwrap(), Ok(()), "a gRPC call in hand at SIGTERM");
    }
    assert!(
        ended.status.success(),
        "{:?}\n{}",
        ended.status,
        gateway.log_text()
    );
    let after = ended.after_signal.unwrap();
    assert!(
        after >= UPSTREAM_TAKES / 2 && after < Duration::from_secs(10),
        "exits once the calls are done, within the grace period: {after:?}"
    );
    assert_eq!(
        readyz,
        Some(503),
        "the admin port says the gateway is leaving"
    );
    assert_eq!(
        during_http
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string()),
        Ok(200),
        "a new HTTP client during the delay"
    );
    assert_eq!(during_grpc, Ok(()), "a new gRPC client during the delay");
    assert!(
        new_connection.is_err() && new_grpc_connection.is_err(),
        "no new connections once the delay is over"
    );
}

/// An upstream that takes the connection and the request, then drops the connection without an
/// answer (a process killed mid-call). Returns its URL, the bytes it read and the connections it
/// took.
async fn upstream_that_drops_the_call() -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (counter, connections) = (read.clone(), taken.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let counter = counter.clone();
            tokio::spawn(async move {
                // the server's HTTP/2 preface (an empty SETTINGS frame): the client may send
                let _ = stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                let mut buf = [0u8; 4096];
                let until = tokio::time::Instant::now() + Duration::from_millis(300);
                while let Ok(Ok(n)) = tokio::time::timeout_at(until, stream.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                    counter.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
                // dropped: the connection closes under the call
            });
        }
    });
    (url, read, taken)
}

#[tokio::test]
async fn an_upstream_lost_after_the_request_was_sent_is_503_outcome_unknown_not_500() {
    let (dropping, read, taken) = upstream_that_drops_the_call().await;
    let m = crate::Mesh::start(|cfg| {
        cfg.upstreams.insert("auth".into(), dropping.clone());
        // no readiness round may open connections of its own during the calls
        cfg.server.health_check_interval_ms = 60_000;
    })
    .await;
    let (status, headers, body) = m
        .send(
            m.http
                .post(m.url("/v1/sessions"))
                .header("idempotency-key", "k-1")
                .json(&json!({"username": "alice", "password": "right"})),
        )
        .await;
    assert!(
        read.load(std::sync::atomic::Ordering::SeqCst) > 24,
        "the request reached the upstream (beyond the client preface)"
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(crate::reason(&body), "outcome_unknown", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "1");

    // the gRPC door answers the same, and does not send again what may have been applied
    let channel = test_support::channel(m.gateway.grpc_addr).await;
    let before = taken.load(std::sync::atomic::Ordering::SeqCst);
    let err = pb::auth_service_client::AuthServiceClient::new(channel)
        .login_user(pb::LoginUserRequest {
            username: "alice".into(),
            password: "right".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(
        platform::error::reason_of(&err).as_deref(),
        Some("outcome_unknown"),
        "{err:?}"
    );
    assert_eq!(
        taken.load(std::sync::atomic::Ordering::SeqCst),
        before + 1,
        "sent once: never retried"
    );
}

#[tokio::test]
async fn an_upstream_nobody_listens_on_is_503_upstream_unavailable_nothing_applied() {
    let m = crate::Mesh::start(|_| {}).await;
    // accounts points at a closed port (see Mesh::start)
    let (status, _, body) = m.send(m.http.get(m.url("/v1/accounts/1"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(crate::reason(&body), "upstream_unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nothing was applied"),
        "{body}"
    );
}

/// A pass-through to an upstream that, once armed, cuts the connections it carries and answers
/// the next connection's call with a graceful GOAWAY (NO_ERROR, last stream 0), as a draining
/// server does to a call that raced its GOAWAY; later connections pass through again.
struct GoesAwayOnce {
    url: String,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<tokio::sync::Notify>,
    /// Connections taken, and GOAWAYs given.
    taken: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    gone_away: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl GoesAwayOnce {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::{Arc, atomic::Ordering::SeqCst};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Self {
            url: format!("http://{}", listener.local_addr().unwrap()),
            armed: Default::default(),
            cut: Default::default(),
            taken: Default::default(),
            gone_away: Default::default(),
        };
        let (armed, cut, taken, gone_away) = (
            me.armed.clone(),
            me.cut.clone(),
            me.taken.clone(),
            me.gone_away.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                taken.fetch_add(1, SeqCst);
                if !armed.swap(false, SeqCst) {
                    let cut = cut.clone();
                    tokio::spawn(async move {
                        let mut to = tokio::net::TcpStream::connect(upstream).await.unwrap();
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut stream, &mut to) => {}
                            () = cut.notified() => {}
                        }
                    });
                    continue;
                }
                let gone_away = Arc::clone(&gone_away);
                tokio::spawn(async move {
                    // the client's preface, SETTINGS and (usually) the call's HEADERS
                    let mut buf = [0u8; 4096];
                    let mut read = 0;
                    let until = tokio::time::Instant::now() + Duration::from_millis(200);
                    while read < 60 {
                        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => read += n,
                            _ => break,
                        }
                    }
                    // SETTINGS (empty), then GOAWAY: last stream id 0, NO_ERROR
                    let mut frames = vec![0, 0, 0, 4, 0, 0, 0, 0, 0];
                    frames.extend_from_slice(&[0, 0, 8, 7, 0, 0, 0, 0, 0]);
                    frames.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
                    let _ = stream.write_all(&frames).await;
                    gone_away.fetch_add(1, SeqCst);
                    // hold the connection a while, as a draining server does, then close it
                    let until = tokio::time::Instant::now() + Duration::from_millis(300);
                    while let Ok(Ok(n)) =
                        tokio::time::timeout_at(until, stream.read(&mut buf)).await
                    {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
        me
    }

    /// Cuts the connections passing through; the next one gets the GOAWAY.
    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut.notify_waiters();
    }
}

#[tokio::test]
async fn a_call_beyond_a_graceful_goaway_was_not_sent_and_is_sent_again_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let upstream = echo_upstream().await;
    let fake = GoesAwayOnce::start(upstream.grpc_addr).await;
    let m = crate::Mesh::start(|cfg| {
        cfg.upstreams.insert("auth".into(), fake.url.clone());
        // no readiness round may take the armed connection (the first runs at start)
        cfg.server.health_check_interval_ms = 60_000;
    })
    .await;
    let login = || {
        m.send(
            m.http
                .post(m.url("/v1/sessions"))
                .json(&json!({"username": "alice", "password": "right"})),
        )
    };
    let (status, _, body) = login().await;
    assert_eq!(status, 200, "through the pass-through: {body}");
    let before = fake.taken.load(SeqCst);
    fake.arm();
    // the gateway's channel sees its connection closed before the next call
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, body) = login().await;
    assert_eq!(fake.gone_away.load(SeqCst), 1, "the call met the GOAWAY");
    assert_eq!(
        status, 200,
        "the call the GOAWAY covered is sent again on a new connection: {body}"
    );
    assert_eq!(
        fake.taken.load(SeqCst),
        before + 2,
        "one retry, on a connection of its own"
    );
}

#[tokio::test]
async fn a_grpc_call_beyond_a_graceful_goaway_was_not_sent_and_is_sent_again_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let upstream = echo_upstream().await;
    let fake = GoesAwayOnce::start(upstream.grpc_addr).await;
    let m = crate::Mesh::start(|cfg| {
        cfg.upstreams.insert("auth".into(), fake.url.clone());
        // no readiness round may take the armed connection (the first runs at start)
        cfg.server.health_check_interval_ms = 60_000;
    })
    .await;
    let client = pb::auth_service_client::AuthServiceClient::new(
        test_support::channel(m.gateway.grpc_addr).await,
    );
    let login = move || {
        let mut client = client.clone();
        async move {
            client
                .login_user(pb::LoginUserRequest {
                    username: "alice".into(),
                    password: "right".into(),
                })
                .await
                .map(|_| ())
                .map_err(|e| {
                    format!(
                        "{:?} {:?} {}",
                        e.code(),
                        platform::error::reason_of(&e),
                        e.message()
                    )
                })
        }
    };
    assert_eq!(login().await, Ok(()), "through the pass-through");
    let before = fake.taken.load(SeqCst);
    fake.arm();
    // the gateway's channel sees its connection closed before the next call
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = login().await;
    assert_eq!(fake.gone_away.load(SeqCst), 1, "the call met the GOAWAY");
    assert_eq!(
        answer,
        Ok(()),
        "the call the GOAWAY covered is sent again on a new connection"
    );
    assert_eq!(
        fake.taken.load(SeqCst),
        before + 2,
        "one retry, on a connection of its own"
    );
}

/// An echo upstream serving gRPC on `listener` (a fixed address, so that a second one can take
/// its place), draining at once on shutdown: a restart's SIGTERM.
async fn echo_upstream_on(
    listener: tokio::net::TcpListener,
) -> (
    platform::Shutdown,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let server = ServerConfig {
        gateway_secret: Some(platform::config::GatewaySecret(SECRET.into())),
        shutdown_delay_ms: 0,
        ..ServerConfig::default()
    };
    let listeners = platform::Listeners {
        grpc: listener,
        http: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: None,
    };
    let shutdown = platform::Shutdown::new();
    let stop = shutdown.clone();
    let handle = tokio::spawn(async move {
        let routes = tonic::service::Routes::new(AuthServiceServer::new(Echo));
        platform::serve_all(
            &server,
            listeners,
            routes,
            &[proto::service_names::AUTH],
            Readiness::new(),
            stop,
        )
        .await
    });
    (shutdown, handle)
}

/// `gateway_upstream_retries_total{door="grpc"}` on the gateway's admin port.
async fn grpc_retries(admin: std::net::SocketAddr) -> u64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("gateway_upstream_retries_total{door=\"grpc\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |n| n.parse::<f64>().unwrap() as u64)
}

/// What a login through the gRPC door got: `Ok`, or the code and reason.
type Answer = Result<(), (tonic::Code, Option<String>)>;

async fn grpc_login(channel: tonic::transport::Channel) -> Answer {
    pb::auth_service_client::AuthServiceClient::new(channel)
        .login_user(pb::LoginUserRequest {
            username: "restart".into(),
            password: "right".into(),
        })
        .await
        .map(|_| ())
        .map_err(|e| (e.code(), platform::error::reason_of(&e)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_restarting_under_grpc_calls_costs_no_call_an_internal_error() {
    use std::sync::{Arc, atomic::AtomicBool, atomic::Ordering::SeqCst};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (first, first_ended) = echo_upstream_on(listener).await;
    // the gateway in a process of its own: its retry counter counts this test's calls only
    let (_gateway, _http, grpc, admin) = gateway_process(&format!("http://{addr}")).await;
    let channel = test_support::channel(grpc).await;
    assert_eq!(grpc_login(channel.clone()).await, Ok(()), "warm-up");

    // 1. four callers keep calling while the upstream drains, its port stays closed 150 ms, and
    //    a new upstream takes its place
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (channel, stop) = (channel.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(SeqCst) {
                    answers.push(grpc_login(channel.clone()).await);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                answers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.trigger();
    first_ended.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (second, second_ended) = echo_upstream_on(listener).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, SeqCst);
    let answers: Vec<Answer> = join_all(callers)
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    let unavailable = answers
        .iter()
        .filter(|a| matches!(a, Err((_, Some(r))) if r == "upstream_unavailable"))
        .count();
    for answer in &answers {
        match answer {
            Ok(()) => {}
            Err((tonic::Code::Unavailable, Some(reason)))
                if reason == "upstream_unavailable" || reason == "outcome_unknown" => {}
            other => panic!("not a success nor a documented reason: {other:?} (all: {answers:?})"),
        }
    }
    assert!(unavailable > 0, "calls met the closed port: {answers:?}");
    let retried = grpc_retries(admin).await;
    assert!(
        retried >= unavailable as u64,
        "each call answered upstream_unavailable was sent twice first: {retried} retries, \
         {unavailable} answers"
    );
    assert_eq!(
        answers.last(),
        Some(&Ok(())),
        "the new upstream serves: {answers:?}"
    );

    // 2. one call with the port closed: refused, sent again 50 ms later, refused again, and
    //    answered upstream_unavailable (nothing applied)
    second.trigger();
    second_ended.await.unwrap().unwrap();
    let before = grpc_retries(admin).await;
    let started = std::time::Instant::now();
    let refused = grpc_login(channel.clone()).await;
    let took = started.elapsed();
    assert_eq!(
        refused,
        Err((
            tonic::Code::Unavailable,
            Some("upstream_unavailable".to_owned())
        ))
    );
    assert_eq!(grpc_retries(admin).await, before + 1, "one retry");
    assert!(
        took >= Duration::from_millis(50),
        "after the pause: {took:?}"
    );

    // 3. a caller's deadline too short for the pause: no retry, the same answer
    let mut req = tonic::Request::new(pb::LoginUserRequest {
        username: "restart".into(),
        password: "right".into(),
    });
    req.set_timeout(Duration::from_millis(60));
    let err = pb::auth_service_client::AuthServiceClient::new(channel.clone())
        .login_user(req)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(
        platform::error::reason_of(&err).as_deref(),
        Some("upstream_unavailable")
    );
    assert_eq!(
        grpc_retries(admin).await,
        before + 1,
        "no retry past the deadline"
    );

    // 4. back up on the same address: served again, no restart of the gateway
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (third, _third_ended) = echo_upstream_on(listener).await;
    assert_eq!(grpc_login(channel).await, Ok(()));
    third.trigger();
}
