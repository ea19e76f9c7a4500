//! Traces across the mesh: a small OTLP receiver (the collector's TraceService) stands in for the
//! collector; the services export to it over OTLP/gRPC. A sign-up and a transfer sent with the
//! caller's `traceparent` (what the gateway sends) give server spans in the caller's trace, each a
//! child of the caller's span, and the sign-up's event carries auth's server span on to the mailer.
//!
//! The exporter is process-global, so the whole mesh runs in this one test process; which service
//! a span belongs to is its `rpc.service` attribute.

mod support;

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
use proto::{auth::v1::CreateUserRequest, transfers::v1::CreateTransferRequest};
use redis::streams::StreamRangeReply;
use support::Mesh;
use tonic::{Request, Response, Status};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_and_a_transfer_are_server_spans_of_the_callers_trace_and_the_event_carries_it_on()
 {
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
    // The caller (the gateway, in production) has a trace and a span per upstream call.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let signup_parent = "b7ad6b7169203331";
    let transfer_parent = "c8be7c827a314442";
    let tp = |parent: &str| format!("00-{trace_id}-{parent}-01");

    let mut signup = Request::new(CreateUserRequest {
        username: "dave".into(),
        full_name: "Dave Example".into(),
        email: "dave@example.com".into(),
        password: "correct-horse-42".into(),
    });
    signup
        .metadata_mut()
        .insert("traceparent", tp(signup_parent).parse().unwrap());
    m.auth_client
        .clone()
        .create_user(signup)
        .await
        .expect("sign up");

    let dave = m.token("dave", Role::Depositor);
    let erin = m.token("erin", Role::Depositor);
    let from = m.open_account(&dave, "EUR").await;
    let to = m.open_account(&erin, "EUR").await;
    m.deposit(from, 5_000, "EUR").await;
    let mut transfer = test_support::authed(
        CreateTransferRequest {
            from_account_id: from,
            to_account_id: to,
            amount: 1_234,
            currency: "EUR".into(),
            request_id: "trace-transfer-1".into(),
        },
        &dave,
    );
    transfer
        .metadata_mut()
        .insert("traceparent", tp(transfer_parent).parse().unwrap());
    m.transfers_client
        .clone()
        .create_transfer(transfer)
        .await
        .expect("transfer");

    // The relay moves the sign-up event to the stream in the background.
    let stream_key = auth::relay::stream_key(&m.redis.prefix);
    let mut entry_tp = None;
    for _ in 0..300 {
        let mut conn = m.redis.pool.get().await.unwrap();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&stream_key)
            .arg("-")
            .arg("+")
            .query_async(&mut *conn)
            .await
            .unwrap();
        if let Some(e) = reply.ids.first() {
            entry_tp = Some(e.get::<String>("traceparent").expect("traceparent field"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entry_tp = entry_tp.expect("the sign-up event reached the stream");

    // Wait (generously) for both server spans to arrive at the collector.
    let mut found = (Vec::new(), Vec::new());
    for _ in 0..60 {
        platform::telemetry::flush().await;
        found = (
            receiver.server_spans(CREATE_USER),
            receiver.server_spans(CREATE_TRANSFER),
        );
        if !found.0.is_empty() && !found.1.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (signups, transfers) = found;
    assert_eq!(signups.len(), 1, "one CreateUser server span: {signups:#?}");
    assert_eq!(
        transfers.len(),
        1,
        "one CreateTransfer server span: {transfers:#?}"
    );
    let (auth_span, transfer_span) = (&signups[0], &transfers[0]);

    // Both hops are in the caller's trace, each a child of the caller's span for that call.
    assert_eq!(auth_span.trace_id, trace_id);
    assert_eq!(auth_span.parent_span_id, signup_parent);
    assert_eq!(transfer_span.trace_id, trace_id);
    assert_eq!(transfer_span.parent_span_id, transfer_parent);
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
            .get("rpc.service")
            .map(String::as_str),
        Some("transactions.transfers.v1.TransfersService")
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
    assert!(
        spans.iter().all(|s| s
            .attributes
            .values()
            .all(|v| !v.contains("correct-horse-42"))),
        "no span attribute holds the password"
    );

    // The event for the mailer continues the trace under auth's server span.
    let carried = TraceParent::parse(&entry_tp).expect("a valid traceparent on the stream entry");
    assert_eq!(carried.trace_id_hex(), trace_id);
    assert_eq!(format!("{:016x}", carried.span_id), auth_span.span_id);

    // Every span of the trace hangs off the caller's spans or another span of the trace.
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
    }

    m.stop().await;
}
