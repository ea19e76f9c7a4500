//! "You received money" across the services: two users sign up through auth and verify with the
//! link of their verification email (auth's outbox, its relay, the mailer, SMTP); they open
//! accounts, a banker deposits, one pays the other through transfers (its ledger-events relay on),
//! and the mailer, which knows the users only from auth's `user.contact_updated` events, sends the
//! credited user one "You received" email. Turning the email off over HTTP through the gateway
//! (PATCH /v1/users/me, the new UpdateUser field) stops the next one.

use std::time::Duration;

use platform::token::Role;
use proto::{
    accounts::v1::{CreateAccountRequest, accounts_service_client::AccountsServiceClient},
    auth::v1::{self as pb, auth_service_client::AuthServiceClient},
    transfers::v1::{
        CreateTransferRequest, DepositRequest, transfers_service_client::TransfersServiceClient,
    },
};
use test_support::{Running, TestDb, TestRedis, access_token, authed, channel, spawn, test_keys};
use tonic::transport::Channel;

use crate::support::{
    gateway_secret,
    smtp::{SmtpSink, eventually, link_in, smtp_config, start_mailer},
    wait_ready, wait_ready_at,
};

const WAIT: Duration = Duration::from_secs(60);
const PASSWORD: &str = "correct horse battery";

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The emails the sink got for `to` whose subject starts "You received".
fn money_emails(sink: &SmtpSink, to: &str) -> Vec<String> {
    sink.received()
        .into_iter()
        .filter(|r| r.rcpt_to == [to.to_owned()] && r.data.contains("Subject: You received"))
        .map(|r| r.data)
        .collect()
}

/// Signs `name` up, follows the link of the verification email, logs in: the access token.
async fn verified_user(
    auth: &mut AuthServiceClient<Channel>,
    sink: &SmtpSink,
    name: &str,
) -> String {
    let email = format!("{name}@example.com");
    auth.create_user(pb::CreateUserRequest {
        username: name.into(),
        full_name: format!("{name} Example"),
        email: email.clone(),
        password: PASSWORD.into(),
    })
    .await
    .expect("sign up");
    let mail = eventually("the verification email", WAIT, || async {
        sink.received()
            .into_iter()
            .find(|r| r.rcpt_to == [email.clone()] && r.data.contains("verify_email"))
    })
    .await;
    let (email_id, code) = link_in(&mail.data);
    auth.verify_email(pb::VerifyEmailRequest {
        email_id,
        secret_code: percent_decode(&code),
    })
    .await
    .expect("the link verifies");
    auth.login_user(pb::LoginUserRequest {
        username: name.into(),
        password: PASSWORD.into(),
    })
    .await
    .expect("login")
    .into_inner()
    .access_token
}

/// Waits until the mailer's recipients table says `name`'s preference is `on`.
async fn mailer_knows(db: &TestDb, name: &str, on: bool) {
    eventually("the mailer to know the preference", WAIT, || async {
        let v: Option<bool> = sqlx::query_scalar(
            "SELECT r.notify_money_received FROM mailer.recipients r
             JOIN auth.users u ON u.id = r.user_id
             WHERE u.username = $1 AND r.email_verified",
        )
        .bind(name)
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        (v == Some(on)).then_some(())
    })
    .await;
}

/// The mailer's group on the ledger stream holds nothing pending and has read every entry.
async fn ledger_drained(redis: &TestRedis) {
    eventually(
        "the mailer to have handled every ledger event",
        WAIT,
        || async {
            let mut conn = redis.pool.get().await.unwrap();
            let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(format!("{}events:ledger", redis.prefix))
                .query_async(&mut *conn)
                .await
                .ok()?;
            let g = groups.groups.into_iter().find(|g| g.name == "mailer")?;
            (g.pending == 0 && g.lag.unwrap_or(0) == 0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_credited_user_gets_one_money_received_email_and_can_turn_it_off_over_http() {
    let db = TestDb::new().await;
    let redis = TestRedis::new().await;
    let sink = SmtpSink::start().await;
    let keys = test_keys();

    let mut auth_cfg = auth::config::Config {
        database: db.config(),
        redis: redis.config(),
        ..Default::default()
    };
    auth_cfg.token.private_key = keys.private_b64();
    auth_cfg.relay.poll_interval_ms = 200;
    auth_cfg.server.gateway_secret = Some(gateway_secret());
    let auth = spawn(move |l, s| auth::startup::run(auth_cfg, l, s)).await;

    let mut accounts_cfg = accounts::config::Config {
        database: db.config(),
        ..Default::default()
    };
    accounts_cfg.token.public_key = Some(keys.public_b64());
    accounts_cfg.token.revocations.redis = redis.config();
    accounts_cfg.server.gateway_secret = Some(gateway_secret());
    let accounts = spawn(move |l, s| accounts::startup::run(accounts_cfg, l, s)).await;

    let mut transfers_cfg = transfers::config::Config {
        database: db.config(),
        ..Default::default()
    };
    transfers_cfg.token.public_key = Some(keys.public_b64());
    transfers_cfg.token.revocations.redis = redis.config();
    transfers_cfg.server.gateway_secret = Some(gateway_secret());
    transfers_cfg.relay.enabled = true;
    transfers_cfg.relay.redis = Some(redis.config());
    transfers_cfg.relay.poll_interval_ms = 200;
    let transfers = spawn(move |l, s| transfers::startup::run(transfers_cfg, l, s)).await;

    let mailer_cfg = mailer::config::Config {
        database: db.config(),
        recipients: mailer::config::RecipientsConfig::default(),
        ledger: mailer::config::LedgerConfig::default(),
        ..smtp_config(&redis, &sink, "money-e2e")
    };
    let mailer = start_mailer(mailer_cfg).await;

    let mut gateway_cfg = edge_gateway::config::Config::default();
    gateway_cfg.upstreams.insert("auth".into(), auth.grpc_url());
    gateway_cfg
        .upstreams
        .insert("accounts".into(), accounts.grpc_url());
    gateway_cfg
        .upstreams
        .insert("transfers".into(), transfers.grpc_url());
    gateway_cfg.limits.request_timeout_ms = 30_000;
    gateway_cfg.rate_limit.per_ip_per_minute = 0;
    gateway_cfg.server.gateway_secret = Some(gateway_secret());
    let gateway: Running = spawn(move |l, s| edge_gateway::startup::run(gateway_cfg, l, s)).await;
    for svc in [&auth, &accounts, &transfers, &mailer] {
        wait_ready(svc).await;
    }
    wait_ready_at(&gateway.admin_url()).await;

    let mut auth_client = AuthServiceClient::new(channel(auth.grpc_addr).await);
    let ann = verified_user(&mut auth_client, &sink, "ann").await;
    let bob = verified_user(&mut auth_client, &sink, "bob").await;
    mailer_knows(&db, "ann", true).await;
    mailer_knows(&db, "bob", true).await;

    let accounts_client = AccountsServiceClient::new(channel(accounts.grpc_addr).await);
    let open = |token: String| {
        let mut c = accounts_client.clone();
        async move {
            c.create_account(authed(
                CreateAccountRequest {
                    currency: "USD".into(),
                },
                &token,
            ))
            .await
            .expect("open account")
            .into_inner()
            .id
        }
    };
    let ann_account = open(ann.clone()).await;
    let bob_account = open(bob.clone()).await;

    let banker = access_token(&keys, "bea_banker", Role::Banker, true);
    let mut transfers_client = TransfersServiceClient::new(channel(transfers.grpc_addr).await);
    transfers_client
        .deposit(authed(
            DepositRequest {
                account_id: ann_account,
                amount: 10_000,
                currency: "USD".into(),
                request_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            },
            &banker,
        ))
        .await
        .expect("deposit");
    let pay = |from: i64, to: i64, amount: i64, token: String| {
        let mut c = transfers_client.clone();
        async move {
            c.create_transfer(authed(
                CreateTransferRequest {
                    from_account_id: from,
                    to_account_id: to,
                    amount,
                    currency: "USD".into(),
                    request_id: uuid::Uuid::new_v4().to_string(),
                    description: "lunch".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("transfer")
        }
    };
    pay(ann_account, bob_account, 2_500, ann.clone()).await;

    let to_bob = eventually("bob's money-received email", WAIT, || async {
        money_emails(&sink, "bob@example.com").pop()
    })
    .await;
    assert!(
        to_bob.contains("Subject: You received 25.00 USD"),
        "{to_bob}"
    );
    assert!(
        to_bob.contains(&format!("in your account {bob_account}")),
        "{to_bob}"
    );
    assert!(to_bob.contains("Reference: lunch"), "{to_bob}");
    ledger_drained(&redis).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        money_emails(&sink, "bob@example.com").len(),
        1,
        "one email for one transfer"
    );
    let to_ann = money_emails(&sink, "ann@example.com");
    assert_eq!(
        to_ann.len(),
        1,
        "ann: her deposit (she paid, received nothing else)"
    );
    assert!(
        to_ann[0].contains("You received 100.00 USD"),
        "{}",
        to_ann[0]
    );

    // bob turns it off through the gateway: the UpdateUser field over HTTP, shown by GetUser
    let http = reqwest::Client::new();
    let base = gateway.http_url();
    let updated: serde_json::Value = http
        .patch(format!("{base}/v1/users/me"))
        .bearer_auth(&bob)
        .json(&serde_json::json!({"notify_money_received": false}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .expect("PATCH /v1/users/me")
        .json()
        .await
        .unwrap();
    assert_eq!(updated["notify_money_received"], false, "{updated}");
    let me: serde_json::Value = http
        .get(format!("{base}/v1/users/me"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["notify_money_received"], false, "{me}");
    mailer_knows(&db, "bob", false).await;

    pay(ann_account, bob_account, 300, ann.clone()).await;
    // and bob pays ann back: she still gets hers, so the mailer has seen this far
    pay(bob_account, ann_account, 200, bob.clone()).await;
    eventually("ann's second money-received email", WAIT, || async {
        (money_emails(&sink, "ann@example.com").len() == 2).then_some(())
    })
    .await;
    ledger_drained(&redis).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        money_emails(&sink, "bob@example.com").len(),
        1,
        "no email after bob turned them off"
    );

    for svc in [gateway, mailer, transfers, accounts, auth] {
        svc.stop().await.unwrap();
    }
}
