//! `/metrics` of every service parses as Prometheus text, and the counters an on-call engineer
//! watches move as expected after a sign-up, a failed and a good login, a deposit, a transfer, its
//! idempotent replay and a refused transfer.

use platform::token::Role;
use proto::{
    auth::v1::{CreateUserRequest, LoginUserRequest},
    transfers::v1::CreateTransferRequest,
};

use crate::support::{self, Mesh, Scrape, parse_prometheus, scrape};

const AUTH: &str = "/transactions.auth.v1.AuthService";
const ACCOUNTS: &str = "/transactions.accounts.v1.AccountsService";
const TRANSFERS: &str = "/transactions.transfers.v1.TransfersService";

fn rpc(service: &str, method: &str) -> String {
    format!("{service}/{method}")
}

/// `after - before` of one series (sum over matching label sets).
fn delta(before: &Scrape, after: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_services_metrics_parse_and_count_the_rpcs_and_the_money_of_a_transfer() {
    // the Prometheus recorder is one per process, and the pool gauges hold whichever service was
    // scraped last: alone in a process of its own
    if support::ran_in_own_process(
        "metrics::every_services_metrics_parse_and_count_the_rpcs_and_the_money_of_a_transfer",
    ) {
        return;
    }
    let m = Mesh::start().await;
    let services = [&m.auth, &m.accounts, &m.transfers];
    let mut before = Vec::new();
    for svc in services {
        before.push(scrape(svc).await);
    }

    let mut auth = m.auth_client.clone();
    for (username, email) in [("alice", "alice@example.com"), ("bob", "bob@example.com")] {
        auth.create_user(CreateUserRequest {
            username: username.into(),
            full_name: format!("{username} Example"),
            email: email.into(),
            password: "correct-horse-42".into(),
        })
        .await
        .expect("sign up");
    }
    let wrong = auth
        .login_user(LoginUserRequest {
            username: "alice".into(),
            password: "not-the-password".into(),
        })
        .await
        .expect_err("a wrong password fails");
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    auth.login_user(LoginUserRequest {
        username: "alice".into(),
        password: "correct-horse-42".into(),
    })
    .await
    .expect("login");

    let alice = m.token("alice", Role::Depositor);
    let bob = m.token("bob", Role::Depositor);
    let from = m.open_account(&alice, "USD").await;
    let to = m.open_account(&bob, "USD").await;
    m.deposit(from, 10_000, "USD").await;

    let transfer = |amount: i64, key: &str| {
        test_support::authed(
            CreateTransferRequest {
                from_account_id: from,
                to_account_id: to,
                amount,
                currency: "USD".into(),
                request_id: key.into(),
                ..Default::default()
            },
            &alice,
        )
    };
    let mut transfers = m.transfers_client.clone();
    let first = transfers
        .create_transfer(transfer(2_500, "metrics-key-1"))
        .await
        .expect("transfer")
        .into_inner();
    assert!(!first.replayed);
    let again = transfers
        .create_transfer(transfer(2_500, "metrics-key-1"))
        .await
        .expect("replay")
        .into_inner();
    assert!(again.replayed, "the same key answers the first result");
    let refused = transfers
        .create_transfer(transfer(1_000_000, "metrics-key-2"))
        .await
        .expect_err("more than the balance is refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // The relay publishes the two sign-up events in the background: wait (generously) for it.
    for _ in 0..300 {
        let now = scrape(&m.auth).await;
        if delta(&before[0], &now, "outbox_published_total", &[]) >= 2.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut after = Vec::new();
    for svc in services {
        after.push(scrape(svc).await);
    }

    // Each service's /metrics shows its own RPCs (RED: requests by code, a latency histogram).
    let checks: [(usize, String, &str, f64); 6] = [
        (0, rpc(AUTH, "CreateUser"), "Ok", 2.0),
        (0, rpc(AUTH, "LoginUser"), "Ok", 1.0),
        (0, rpc(AUTH, "LoginUser"), "Unauthenticated", 1.0),
        (1, rpc(ACCOUNTS, "CreateAccount"), "Ok", 2.0),
        (2, rpc(TRANSFERS, "CreateTransfer"), "Ok", 2.0),
        (
            2,
            rpc(TRANSFERS, "CreateTransfer"),
            "FailedPrecondition",
            1.0,
        ),
    ];
    for (i, rpc, code, want) in &checks {
        let (b, a) = (&before[*i], &after[*i]);
        let got = delta(
            b,
            a,
            "grpc_server_requests_total",
            &[("rpc", rpc), ("code", code)],
        );
        assert!(got >= *want, "{rpc} {code}: +{got}, want +{want}");
        assert_eq!(
            a.types
                .get("grpc_server_duration_seconds")
                .map(String::as_str),
            Some("histogram")
        );
        let timed = delta(b, a, "grpc_server_duration_seconds_count", &[("rpc", rpc)]);
        assert!(timed >= *want, "{rpc}: {timed} latencies recorded");
        let inf = a.value(
            "grpc_server_duration_seconds_bucket",
            &[("rpc", rpc), ("le", "+Inf")],
        );
        assert_eq!(
            inf,
            a.value("grpc_server_duration_seconds_count", &[("rpc", rpc)]),
            "{rpc}: the +Inf bucket holds every call"
        );
    }

    // Business metrics of money movement.
    let (b, a) = (&before[2], &after[2]);
    assert!(
        delta(
            b,
            a,
            "transfers_total",
            &[("kind", "transfer"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert!(
        delta(
            b,
            a,
            "transfers_total",
            &[("kind", "deposit"), ("outcome", "ok")]
        ) >= 1.0
    );
    let refusals = delta(b, a, "transfers_total", &[("kind", "transfer")])
        - delta(
            b,
            a,
            "transfers_total",
            &[("kind", "transfer"), ("outcome", "ok")],
        );
    assert!(
        refusals >= 1.0,
        "the refused transfer is counted by its outcome"
    );
    assert!(
        delta(b, a, "transfer_amount_minor_total", &[("currency", "USD")]) >= 2_500.0,
        "amounts moved per currency"
    );
    assert!(delta(b, a, "idempotent_replays_total", &[]) >= 1.0);
    // group commit (on by default): the deposit and the transfers went through batches
    assert_eq!(
        a.types.get("transfer_batch_size").map(String::as_str),
        Some("histogram")
    );
    assert!(delta(b, a, "transfer_batch_size_count", &[]) >= 2.0);
    assert!(delta(b, a, "transfer_queue_wait_seconds_count", &[]) >= 2.0);
    assert_eq!(
        a.types.get("transfers_total").map(String::as_str),
        Some("counter")
    );

    // Pool usage, read from each service's own pools when it is scraped.
    for a in &after {
        assert_eq!(
            a.value("db_pool_max_connections", &[]),
            20.0,
            "TestDb's pool size"
        );
        assert!(a.has("db_pool_connections"));
        assert_eq!(
            a.types.get("db_pool_connections").map(String::as_str),
            Some("gauge")
        );
    }
    assert_eq!(
        after[0].value("redis_pool_max_connections", &[]),
        16.0,
        "auth's Redis pool (TestRedis's size)"
    );

    // Events: both sign-ups went through the outbox; the backlog gauge is reported.
    assert!(delta(&before[0], &after[0], "outbox_published_total", &[]) >= 2.0);
    assert!(after[0].has("outbox_backlog"));

    // Identity: the failed login is counted.
    assert!(delta(&before[0], &after[0], "login_failures_total", &[]) >= 1.0);

    m.stop().await;
}

#[test]
fn the_parser_reads_counters_histograms_and_escapes() {
    let text = "# HELP a_total things\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"uo\\\\te\"} 3\n\
        # TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n";
    let s = parse_prometheus(text).unwrap();
    assert_eq!(s.value("a_total", &[("y", "q\"uo\\te")]), 3.0);
    assert_eq!(s.value("h_count", &[]), 2.0);
    assert_eq!(s.value("h_bucket", &[("le", "+Inf")]), 2.0);
    for bad in [
        "a_total 1\n",                               // no TYPE
        "# TYPE a counter\na{x=1} 1\n",              // unquoted
        "# TYPE a counter\na{x=\"1\" 1\n",           // unterminated
        "# TYPE a counter\na one\n",                 // bad value
        "# TYPE a counter\na 1 2 3\n",               // trailing
        "# TYPE a counter\n# TYPE a counter\na 1\n", // two TYPEs
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?}");
    }
}
