//! The real services (auth, accounts, transfers) in-process against real PostgreSQL and Redis, with
//! the gateway in front: every public RPC over HTTP/JSON, the user journey of issue 5, the error
//! classes with status and JSON shape, and a sample over the gateway's gRPC port.

use std::time::Duration;

use platform::token::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use test_support::Running;

use crate::support;

/// The mesh of `support` with the gateway in front, and an HTTP client for the gateway.
struct Mesh {
    gateway: Running,
    services: support::Mesh,
    http: reqwest::Client,
}

impl Mesh {
    async fn start() -> Self {
        let services = support::Mesh::start().await;
        let gateway = services.start_gateway().await;
        Self {
            gateway,
            services,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.http_url())
    }

    /// One call; the status and the JSON answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, token, body, &[]).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, json)
    }

    async fn ok(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let (status, json) = self.call(method.clone(), path, token, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {json}");
        json
    }

    async fn login(&self, username: &str, password: &str) -> Value {
        self.ok(
            Method::POST,
            "/v1/sessions",
            None,
            Some(json!({"username": username, "password": password})),
        )
        .await
    }

    async fn open_account(&self, token: &str, currency: &str) -> String {
        let acc = self
            .ok(
                Method::POST,
                "/v1/accounts",
                Some(token),
                Some(json!({"currency": currency})),
            )
            .await;
        acc["id"].as_str().expect("int64 id is a string").to_owned()
    }
}

fn reason(body: &Value) -> &str {
    body["details"]
        .as_array()
        .and_then(|d| d.iter().find_map(|x| x["reason"].as_str()))
        .unwrap_or("")
}

fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_reason: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert!(
        body["code"].is_i64() && body["message"].is_string(),
        "{body}"
    );
    assert!(body["details"].is_array(), "{body}");
    if !want_reason.is_empty() {
        assert_eq!(reason(body), want_reason, "{body}");
    }
}

#[tokio::test]
async fn the_whole_user_journey_over_http_through_the_gateway() {
    let m = Mesh::start().await;

    // sign up (camelCase accepted on input)
    let (status, created) = m
        .call(
            Method::POST,
            "/v1/users",
            None,
            Some(json!({"username": "alice", "fullName": "Alice Liddell",
                "email": "alice@example.com", "password": "wonderland-42"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["user"]["full_name"], "Alice Liddell");
    assert_eq!(created["user"]["role"], "ROLE_DEPOSITOR");
    assert_eq!(created["user"]["email_verified"], false);

    // the verification link, as the mailer builds it from the outbox event
    let (email_id, secret): (i64, String) = sqlx::query_as(
        "SELECT id, secret_code FROM auth.verify_emails WHERE username = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind("alice")
    .fetch_one(&m.services.db.pool)
    .await
    .unwrap();
    let link = format!("/v1/verify_email?email_id={email_id}&secret_code={secret}");
    let page = m
        .http
        .get(m.url(&link))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Email verified"));
    // single use: the JSON client sees why
    let (status, body) = m.call(Method::GET, &link, None, None).await;
    assert!(status.is_client_error(), "{body}");
    assert_eq!(reason(&body), "verification_used");

    // log in, open an account
    let session = m.login("alice", "wonderland-42").await;
    let alice = session["access_token"].as_str().unwrap().to_owned();
    let alice_refresh = session["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(session["user"]["email_verified"], true);
    let alice_usd = m.open_account(&alice, "usd").await;

    // a banker (operator-created) deposits
    auth::admin::create_user(
        &m.services.db.pool,
        "banker",
        "Bea Banker",
        "bea@example.com",
        "counting-house-1",
        Role::Banker,
    )
    .await
    .unwrap();
    let banker = m.login("banker", "counting-house-1").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let deposit = m
        .ok(
            Method::POST,
            &format!("/v1/accounts/{alice_usd}:deposit"),
            Some(&banker),
            Some(json!({"amount": 10_000, "currency": "USD"})),
        )
        .await;
    assert_eq!(deposit["transfer"]["kind"], "TRANSFER_KIND_DEPOSIT");
    assert_eq!(deposit["transfer"]["amount"], "10000");

    // bob, to receive
    auth::admin::create_user(
        &m.services.db.pool,
        "bob",
        "Bob",
        "bob@example.com",
        "bobs-password-1",
        Role::Depositor,
    )
    .await
    .unwrap();
    let bob = m.login("bob", "bobs-password-1").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_usd = m.open_account(&bob, "USD").await;

    // transfer with an Idempotency-Key, then the same request again
    let transfer = json!({"from_account_id": alice_usd, "to_account_id": bob_usd,
        "amount": "2500", "currency": "USD"});
    let headers = [("idempotency-key", "journey-transfer-1")];
    let (status, first) = m
        .call_with(
            Method::POST,
            "/v1/transfers",
            Some(&alice),
            Some(transfer.clone()),
            &headers,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["replayed"], false);
    assert_eq!(first["from_account_balance"], "7500");
    let (status, again) = m
        .call_with(
            Method::POST,
            "/v1/transfers",
            Some(&alice),
            Some(transfer.clone()),
            &headers,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["transfer"]["id"], first["transfer"]["id"]);
    // the same key with other parameters is a clear error
    let mut other = transfer.clone();
    other["amount"] = json!("1");
    let (status, body) = m
        .call_with(
            Method::POST,
            "/v1/transfers",
            Some(&alice),
            Some(other),
            &headers,
        )
        .await;
    assert_error(status, &body, 400, "idempotency_key_reused");

    // list transfers and the statement
    let list = m
        .ok(
            Method::GET,
            &format!("/v1/accounts/{alice_usd}/transfers?page_size=10"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(list["transfers"].as_array().unwrap().len(), 2, "{list}");
    let entries = m
        .ok(
            Method::GET,
            &format!("/v1/accounts/{alice_usd}/entries"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(entries["entries"][0]["amount"], "-2500");
    assert_eq!(entries["entries"][0]["balance_after"], "7500");
    let transfer_id = first["transfer"]["id"].as_str().unwrap();
    let got = m
        .ok(
            Method::GET,
            &format!("/v1/transfers/{transfer_id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(got["amount"], "2500");

    // renew tokens, then log out; the session's refresh token then stops working
    let renewed = m
        .ok(
            Method::POST,
            "/v1/tokens:renew",
            None,
            Some(json!({"refresh_token": alice_refresh})),
        )
        .await;
    let alice2 = renewed["access_token"].as_str().unwrap().to_owned();
    let refresh2 = renewed["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, alice_refresh);
    let out = m
        .ok(Method::DELETE, "/v1/sessions/current", Some(&alice2), None)
        .await;
    assert_eq!(out["session_id"], session["session_id"]);
    let (status, body) = m
        .call(
            Method::POST,
            "/v1/tokens:renew",
            None,
            Some(json!({"refreshToken": refresh2})),
        )
        .await;
    assert_error(status, &body, 401, "");
}

#[tokio::test]
async fn every_other_public_rpc_answers_over_http() {
    let m = Mesh::start().await;
    auth::admin::create_user(
        &m.services.db.pool,
        "banker",
        "Bea Banker",
        "bea@example.com",
        "counting-house-1",
        Role::Banker,
    )
    .await
    .unwrap();
    let banker = m.login("banker", "counting-house-1").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    m.ok(
        Method::POST,
        "/v1/users",
        None,
        Some(
            json!({"username": "carol", "full_name": "Carol", "email": "carol@example.com",
            "password": "carols-secret-1"}),
        ),
    )
    .await;
    let carol = m.login("carol", "carols-secret-1").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // GetUser (me), UpdateUser, ResendVerificationEmail
    let me = m.ok(Method::GET, "/v1/users/me", Some(&carol), None).await;
    assert_eq!(me["username"], "carol");
    let updated = m
        .ok(
            Method::PATCH,
            "/v1/users/carol",
            Some(&carol),
            Some(json!({"full_name": "Carol C"})),
        )
        .await;
    assert_eq!(updated["full_name"], "Carol C");
    let resent = m
        .ok(
            Method::POST,
            "/v1/users/me/verification_emails",
            Some(&carol),
            Some(json!({})),
        )
        .await;
    assert_eq!(resent["email"], "carol@example.com");

    // accounts: create, get, list, freeze, unfreeze
    let acc = m.open_account(&carol, "EUR").await;
    let got = m
        .ok(
            Method::GET,
            &format!("/v1/accounts/{acc}"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(got["currency"], "EUR");
    assert_eq!(got["status"], "ACCOUNT_STATUS_ACTIVE");
    let listed = m
        .ok(Method::GET, "/v1/accounts?owner=carol", Some(&banker), None)
        .await;
    assert_eq!(listed["accounts"].as_array().unwrap().len(), 1, "{listed}");
    let frozen = m
        .ok(
            Method::POST,
            &format!("/v1/accounts/{acc}:freeze"),
            Some(&banker),
            Some(json!({"reason": "investigation"})),
        )
        .await;
    assert_eq!(frozen["status"], "ACCOUNT_STATUS_FROZEN");
    let thawed = m
        .ok(
            Method::POST,
            &format!("/v1/accounts/{acc}:unfreeze"),
            Some(&banker),
            Some(json!({"reason": "cleared"})),
        )
        .await;
    assert_eq!(thawed["status"], "ACCOUNT_STATUS_ACTIVE");

    // deposit, withdraw, reconcile
    m.ok(
        Method::POST,
        &format!("/v1/accounts/{acc}:deposit"),
        Some(&banker),
        Some(json!({"amount": "500", "currency": "EUR"})),
    )
    .await;
    let w = m
        .ok(
            Method::POST,
            &format!("/v1/accounts/{acc}:withdraw"),
            Some(&banker),
            Some(json!({"amount": 200, "currency": "EUR"})),
        )
        .await;
    assert_eq!(w["transfer"]["kind"], "TRANSFER_KIND_WITHDRAWAL");
    assert_eq!(w["from_account_balance"], "300");
    let rec = m
        .ok(
            Method::POST,
            "/v1/ledger:reconcile",
            Some(&banker),
            Some(json!({})),
        )
        .await;
    assert_eq!(rec["ok"], true, "{rec}");
}

#[tokio::test]
async fn error_classes_from_the_real_services_keep_status_and_reason() {
    let m = Mesh::start().await;
    // 401: no token
    let (s, b) = m.call(Method::GET, "/v1/accounts", None, None).await;
    assert_error(s, &b, 401, "missing_token");
    // 400 with a field violation from the service's validation
    let (s, b) = m
        .call(
            Method::POST,
            "/v1/users",
            None,
            Some(
                json!({"username": "X!", "full_name": "x", "email": "x@example.com",
                "password": "long-enough-1"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["field_violations"][0]["field"] == "username"),
        "{b}"
    );
    // 409: taken
    auth::admin::create_user(
        &m.services.db.pool,
        "dave",
        "Dave",
        "dave@example.com",
        "daves-secret-1",
        Role::Depositor,
    )
    .await
    .unwrap();
    let (s, b) = m
        .call(
            Method::POST,
            "/v1/users",
            None,
            Some(
                json!({"username": "dave", "full_name": "D", "email": "d2@example.com",
                "password": "long-enough-1"}),
            ),
        )
        .await;
    assert_error(s, &b, 409, "");
    // 401: wrong password, same answer as an unknown user
    let (s1, b1) = m
        .call(
            Method::POST,
            "/v1/sessions",
            None,
            Some(json!({"username": "dave", "password": "wrong-password"})),
        )
        .await;
    let (s2, b2) = m
        .call(
            Method::POST,
            "/v1/sessions",
            None,
            Some(json!({"username": "nobody", "password": "wrong-password"})),
        )
        .await;
    assert_error(s1, &b1, 401, "");
    assert_eq!((s1, reason(&b1)), (s2, reason(&b2)));
    // 403: a depositor cannot reconcile; 404: no such account
    let dave = m.login("dave", "daves-secret-1").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = m
        .call(
            Method::POST,
            "/v1/ledger:reconcile",
            Some(&dave),
            Some(json!({})),
        )
        .await;
    assert_error(s, &b, 403, "");
    let (s, b) = m
        .call(Method::GET, "/v1/accounts/999999", Some(&dave), None)
        .await;
    assert_error(s, &b, 404, "account_not_found");
    // 400 naming the field: a wrong type never reaches the service
    let (s, b) = m
        .call(
            Method::POST,
            "/v1/transfers",
            Some(&dave),
            Some(json!({"from_account_id": "one", "to_account_id": 2, "amount": 1})),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    assert_eq!(
        b["details"][1]["field_violations"][0]["field"],
        "from_account_id"
    );
}

#[tokio::test]
async fn grpc_clients_use_the_gateways_public_port() {
    let m = Mesh::start().await;
    let channel = test_support::channel(m.gateway.grpc_addr).await;
    let mut auth = proto::auth::v1::auth_service_client::AuthServiceClient::new(channel.clone());
    auth.create_user(proto::auth::v1::CreateUserRequest {
        username: "erin".into(),
        full_name: "Erin".into(),
        email: "erin@example.com".into(),
        password: "erins-secret-1".into(),
    })
    .await
    .unwrap();
    let login = auth
        .login_user(proto::auth::v1::LoginUserRequest {
            username: "erin".into(),
            password: "erins-secret-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut accounts =
        proto::accounts::v1::accounts_service_client::AccountsServiceClient::new(channel);
    let created = accounts
        .create_account(test_support::authed(
            proto::accounts::v1::CreateAccountRequest {
                currency: "GBP".into(),
            },
            &login.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.owner, "erin");
    let listed = accounts
        .list_accounts(test_support::authed(
            proto::accounts::v1::ListAccountsRequest::default(),
            &login.access_token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.accounts.len(), 1);
    // the session recorded the client IP the gateway saw
    let ip: String =
        sqlx::query_scalar("SELECT client_ip::text FROM auth.sessions WHERE username = 'erin'")
            .fetch_one(&m.services.db.pool)
            .await
            .unwrap();
    assert!(ip.starts_with("127.0.0.1"), "{ip}");
}
