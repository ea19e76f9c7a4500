//! Traces across the mesh: a small OTLP receiver (the collector's TraceService) stands in for the
//! collector; every service exports to it over OTLP/gRPC. A sign-up and a transfer sent over HTTP
//! to the gateway with the client's `traceparent` make one trace: client → gateway HTTP span →
//! auth / transfers server span → database span, and auth's event carries its span through the
//! outbox and the Redis Stream to the mailer, whose span for that email is auth's child.
//!
//! The exporter is process-global, so the whole mesh runs in this one test process; which service
//! a span belongs to is its `rpc.service` attribute.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
};
use platform::{
    config::{LogFormat, TelemetryConfig},
    telemetry::TraceParent,
    token::Role,
};
use redis::streams::StreamRangeReply;
use tonic::{Request, Response, Status};

use crate::support::{self, Mesh};

/// One exported span, as the collector saw it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    attributes: HashMap<String, String>,
    service_name: String,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service_name = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .map(|a| text(a.value.as_ref()))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Span {
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        name: s.name.clone(),
                        attributes: s
                            .attributes
                            .iter()
                            .map(|a| (a.key.clone(), text(a.value.as_ref())))
                            .collect(),
                        service_name: service_name.clone(),
                    });
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    async fn start(self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    /// The spans received so far whose RPC is `rpc`.
    fn server_spans(&self, rpc: &str) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.attributes.get("rpc").map(String::as_str) == Some(rpc))
            .cloned()
            .collect()
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

const CREATE_USER: &str = "/transactions.auth.v1.AuthService/CreateUser";
const CREATE_TRANSFER: &str = "/transactions.transfers.v1.TransfersService/CreateTransfer";

impl Receiver {
    /// The spans received so far named `name`.
    fn named(&self, name: &str) -> Vec<Span> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }
}

fn only(spans: Vec<Span>, what: &str) -> Span {
    assert_eq!(spans.len(), 1, "exactly one {what} span: {spans:#?}");
    spans.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_and_transfer_through_the_gateway_are_one_trace_from_gateway_to_database_and_mailer()
 {
    // it installs the global subscriber and trace exporter: alone in a process of its own
    if support::ran_in_own_process(
        "tracing::sign_up_and_transfer_through_the_gateway_are_one_trace_from_gateway_to_database_and_mailer",
    ) {
        return;
    }
    let receiver = Receiver::default();
    let endpoint = receiver.clone().start().await;
    platform::telemetry::init_with_writer(
        "mesh-tests",
        &TelemetryConfig {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            otlp_endpoint: Some(endpoint),
        },
        std::io::sink,
    );
    assert!(platform::telemetry::exporting(), "OTLP export is on");

    let m = Mesh::start().await;
    let gateway = m.start_gateway().await;
    let mail_dir = std::env::temp_dir().join(format!("mesh-mail-{}", uuid::Uuid::new_v4()));
    let mailer = m.start_mailer(mail_dir.clone()).await;

    // The client has a trace and a span per call it makes.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let signup_parent = "b7ad6b7169203331";
    let transfer_parent = "c8be7c827a314442";
    let tp = |parent: &str| format!("00-{trace_id}-{parent}-01");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let resp = http
        .post(format!("{}/v1/users", gateway.http_url()))
        .header("traceparent", tp(signup_parent))
        .json(
            &serde_json::json!({"username": "dave", "full_name": "Dave Example",
            "email": "dave@example.com", "password": "correct-horse-42"}),
        )
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "sign up: {}",
        resp.text().await.unwrap()
    );

    let dave = m.token("dave", Role::Depositor);
    let erin = m.token("erin", Role::Depositor);
    let from = m.open_account(&dave, "EUR").await;
    let to = m.open_account(&erin, "EUR").await;
    m.deposit(from, 5_000, "EUR").await;
    let resp = http
        .post(format!("{}/v1/transfers", gateway.http_url()))
        .header("traceparent", tp(transfer_parent))
        .header("idempotency-key", "trace-transfer-1")
        .bearer_auth(&dave)
        .json(&serde_json::json!({"from_account_id": from.to_string(),
            "to_account_id": to.to_string(), "amount": "1234", "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "transfer: {}", resp.status());
    let created: serde_json::Value = resp.json().await.unwrap();
    let transfer_id = created["transfer"]["id"].as_str().unwrap().to_owned();
    // a read by id: its span is named by the route template, never by the id
    let resp = http
        .get(format!("{}/v1/transfers/{transfer_id}", gateway.http_url()))
        .bearer_auth(&dave)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "get transfer: {}",
        resp.status()
    );

    // Wait (generously) for the mailer to send the email and every span to reach the collector.
    let mut mailer_spans = Vec::new();
    for _ in 0..120 {
        platform::telemetry::flush().await;
        mailer_spans = receiver
            .of_trace(trace_id)
            .into_iter()
            .filter(|s| s.name == "mailer.event")
            .collect();
        if !mailer_spans.is_empty()
            && !receiver.server_spans(CREATE_USER).is_empty()
            && !receiver.server_spans(CREATE_TRANSFER).is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let auth_span = only(receiver.server_spans(CREATE_USER), "CreateUser server");
    let transfer_span = only(
        receiver.server_spans(CREATE_TRANSFER),
        "CreateTransfer server",
    );
    let gw_signup = only(receiver.named("POST /v1/users"), "gateway sign-up");
    let gw_transfer = only(receiver.named("POST /v1/transfers"), "gateway transfer");
    for _ in 0..20 {
        if !receiver.named("GET /v1/transfers/{id}").is_empty() {
            break;
        }
        platform::telemetry::flush().await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let gw_read = only(
        receiver.named("GET /v1/transfers/{id}"),
        "gateway read by id",
    );
    assert_eq!(
        gw_read.attributes.get("http.route").map(String::as_str),
        Some("/v1/transfers/{id}")
    );
    assert!(
        receiver
            .named(&format!("GET /v1/transfers/{transfer_id}"))
            .is_empty(),
        "no span is named after an id"
    );
    let mailer_span = only(mailer_spans, "mailer.event in the trace");

    // client → gateway → service, all in the client's trace
    for s in [
        &gw_signup,
        &gw_transfer,
        &auth_span,
        &transfer_span,
        &mailer_span,
    ] {
        assert_eq!(s.trace_id, trace_id, "{s:#?}");
    }
    assert_eq!(gw_signup.parent_span_id, signup_parent);
    assert_eq!(gw_transfer.parent_span_id, transfer_parent);
    assert_eq!(
        gw_transfer.attributes.get("http.route").map(String::as_str),
        Some("/v1/transfers")
    );
    assert_eq!(
        gw_transfer
            .attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("200")
    );
    assert_eq!(auth_span.parent_span_id, gw_signup.span_id);
    assert_eq!(transfer_span.parent_span_id, gw_transfer.span_id);
    assert_eq!(
        auth_span.name,
        "transactions.auth.v1.AuthService/CreateUser"
    );
    assert_eq!(
        auth_span.attributes.get("rpc.service").map(String::as_str),
        Some("transactions.auth.v1.AuthService")
    );
    assert_eq!(
        transfer_span
            .attributes
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("0")
    );
    assert_eq!(auth_span.service_name, "mesh-tests");

    // Database calls are client spans named after the statement, children of the server span.
    let spans = receiver.of_trace(trace_id);
    let insert_user = spans
        .iter()
        .find(|s| s.name == "auth.insert_user")
        .unwrap_or_else(|| panic!("no auth.insert_user span in the trace: {spans:#?}"));
    assert_eq!(insert_user.parent_span_id, auth_span.span_id);
    assert_eq!(
        insert_user.attributes.get("db.system").map(String::as_str),
        Some("postgresql")
    );

    // The email's span hangs under auth's server span: the context rode the outbox and stream.
    assert_eq!(mailer_span.parent_span_id, auth_span.span_id);
    assert_eq!(
        mailer_span.attributes.get("event_type").map(String::as_str),
        Some("user.created")
    );
    let sent = spans
        .iter()
        .find(|s| s.name == "mailer.send_email")
        .unwrap_or_else(|| panic!("no mailer.send_email span in the trace: {spans:#?}"));
    assert_eq!(sent.parent_span_id, mailer_span.span_id);
    assert!(
        spans
            .iter()
            .any(|s| s.name == "mailer.record_sent" && s.parent_span_id == mailer_span.span_id),
        "recording the send (SET + XACK) is a child of the mailer's span"
    );
    let stream_key = auth::relay::stream_key(&m.redis.prefix);
    let mut conn = m.redis.pool.get().await.unwrap();
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(&stream_key)
        .arg("-")
        .arg("+")
        .query_async(&mut *conn)
        .await
        .unwrap();
    let carried = reply.ids[0]
        .get::<String>("traceparent")
        .and_then(|t| TraceParent::parse(&t))
        .expect("a valid traceparent on the stream entry");
    assert_eq!(carried.trace_id_hex(), trace_id);
    assert_eq!(format!("{:016x}", carried.span_id), auth_span.span_id);
    drop(conn);

    // Every span of the trace hangs off the client's spans or another span of the trace, and no
    // attribute holds the password.
    let spans = receiver.of_trace(trace_id);
    let ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for s in &spans {
        assert!(
            [signup_parent, transfer_parent].contains(&s.parent_span_id.as_str())
                || ids.contains(&s.parent_span_id.as_str()),
            "span {} ({}) has a parent outside the trace: {}",
            s.name,
            s.span_id,
            s.parent_span_id
        );
        assert!(
            s.attributes
                .values()
                .all(|v| !v.contains("correct-horse-42")),
            "{s:#?}"
        );
    }

    mailer.stop().await.expect("mailer stops");
    gateway.stop().await.expect("gateway stops");
    m.stop().await;
    let _ = std::fs::remove_dir_all(mail_dir);
}
