//! The accounts service through gRPC against a real PostgreSQL.

use accounts::config::Config;
use platform::{error::reason_of, token::Role};
use proto::accounts::v1::{
    AccountKind, AccountStatus, CreateAccountRequest, FreezeAccountRequest, GetAccountRequest,
    ListAccountsRequest, UnfreezeAccountRequest, accounts_service_client::AccountsServiceClient,
};
use test_support::{TestDb, access_token, authed, channel, spawn, test_keys};
use tonic::{Code, Status, transport::Channel};

struct App {
    client: AccountsServiceClient<Channel>,
    keys: platform::token::Keys,
    db: TestDb,
    _running: test_support::Running,
}

impl App {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let keys = test_keys();
        let mut cfg = Config {
            database: db.config(),
            ..Config::default()
        };
        cfg.token.public_key = Some(keys.public_b64());
        let running =
            spawn(move |listeners, shutdown| accounts::startup::run(cfg, listeners, shutdown))
                .await;
        let client = AccountsServiceClient::new(channel(running.grpc_addr).await);
        Self {
            client,
            keys,
            db,
            _running: running,
        }
    }

    fn token(&self, user: &str) -> String {
        access_token(&self.keys, user, Role::Depositor, true)
    }

    fn banker(&self) -> String {
        access_token(&self.keys, "bank_ann", Role::Banker, true)
    }

    async fn open(
        &self,
        user: &str,
        currency: &str,
    ) -> Result<proto::accounts::v1::Account, Status> {
        self.client
            .clone()
            .create_account(authed(
                CreateAccountRequest {
                    currency: currency.into(),
                },
                &self.token(user),
            ))
            .await
            .map(|r| r.into_inner())
    }
}

fn assert_status(err: Status, code: Code, reason: &str) {
    assert_eq!(err.code(), code, "{err:?}");
    assert_eq!(reason_of(&err).as_deref(), Some(reason), "{err:?}");
}

#[tokio::test]
async fn create_account_takes_any_case_and_answers_uppercase_with_zero_balance() {
    let app = App::start().await;
    let account = app.open("alice", "usd").await.unwrap();
    assert_eq!(account.owner, "alice");
    assert_eq!(account.currency, "USD");
    assert_eq!(account.balance, 0);
    assert_eq!(account.status, AccountStatus::Active as i32);
    assert_eq!(account.kind, AccountKind::Customer as i32);
    assert!(account.created_at.is_some());
}

#[tokio::test]
async fn a_second_account_in_the_same_currency_is_already_exists() {
    let app = App::start().await;
    app.open("alice", "EUR").await.unwrap();
    let err = app.open("alice", "eur").await.unwrap_err();
    assert_status(err, Code::AlreadyExists, "account_exists");
    // another currency, and another user in the same currency, are fine
    app.open("alice", "GBP").await.unwrap();
    app.open("bob", "EUR").await.unwrap();
}

#[tokio::test]
async fn an_unconfigured_currency_is_invalid_argument_unsupported_currency() {
    let app = App::start().await;
    for bad in ["XYZ", "", "dollars"] {
        let err = app.open("alice", bad).await.unwrap_err();
        assert_status(err, Code::InvalidArgument, "unsupported_currency");
    }
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let app = App::start().await;
    let err = app
        .client
        .clone()
        .create_account(tonic::Request::new(CreateAccountRequest {
            currency: "USD".into(),
        }))
        .await
        .unwrap_err();
    assert_status(err, Code::Unauthenticated, "missing_token");
    let other_keys = test_keys();
    let forged = access_token(&other_keys, "alice", Role::Banker, true);
    let err = app
        .client
        .clone()
        .get_account(authed(GetAccountRequest { id: 1 }, &forged))
        .await
        .unwrap_err();
    assert_status(err, Code::Unauthenticated, "token_invalid");
}

#[tokio::test]
async fn get_account_shows_the_owner_and_a_banker_and_hides_it_from_others() {
    let app = App::start().await;
    let account = app.open("alice", "USD").await.unwrap();
    let get = |token: String| {
        let mut client = app.client.clone();
        async move {
            client
                .get_account(authed(GetAccountRequest { id: account.id }, &token))
                .await
                .map(|r| r.into_inner())
        }
    };
    assert_eq!(get(app.token("alice")).await.unwrap().id, account.id);
    assert_eq!(get(app.banker()).await.unwrap().owner, "alice");
    let err = get(app.token("mallory")).await.unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");
    // a missing id answers exactly like someone else's
    let err = app
        .client
        .clone()
        .get_account(authed(
            GetAccountRequest { id: 999_999 },
            &app.token("alice"),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");
    let err = app
        .client
        .clone()
        .get_account(authed(GetAccountRequest { id: 0 }, &app.token("alice")))
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "invalid_argument");
}

#[tokio::test]
async fn system_accounts_exist_for_every_configured_currency_and_depositors_never_see_them() {
    let app = App::start().await;
    // created in the background at startup: wait for them (up to 30 s; the machine may be busy)
    let mut system: Vec<(i64, String, String)> = Vec::new();
    for _ in 0..300 {
        system = sqlx::query_as(
            "SELECT id, owner, currency FROM ledger.accounts WHERE kind = 'system' ORDER BY currency",
        )
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        if system.len() == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let currencies: Vec<&str> = system.iter().map(|(_, _, c)| c.as_str()).collect();
    assert_eq!(currencies, ["CAD", "EUR", "GBP", "JPY", "USD"]);
    assert!(system.iter().all(|(_, owner, _)| owner == "@system"));

    let (usd_cash, _, _) = system.iter().find(|(_, _, c)| c == "USD").unwrap().clone();
    let err = app
        .client
        .clone()
        .get_account(authed(
            GetAccountRequest { id: usd_cash },
            &app.token("alice"),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");
    let seen = app
        .client
        .clone()
        .get_account(authed(GetAccountRequest { id: usd_cash }, &app.banker()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.kind, AccountKind::System as i32);
}

#[tokio::test]
async fn list_accounts_pages_newest_first_with_an_opaque_cursor() {
    let app = App::start().await;
    let mut opened = Vec::new();
    for currency in ["USD", "EUR", "GBP"] {
        opened.push(app.open("alice", currency).await.unwrap().id);
    }
    app.open("bob", "USD").await.unwrap();
    let mut client = app.client.clone();
    let token = app.token("alice");
    let first = client
        .list_accounts(authed(
            ListAccountsRequest {
                page_size: 2,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = first.accounts.iter().map(|a| a.id).collect();
    assert_eq!(ids, [opened[2], opened[1]]);
    assert!(!first.next_page_token.is_empty());
    let second = client
        .list_accounts(authed(
            ListAccountsRequest {
                page_size: 2,
                page_token: first.next_page_token,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = second.accounts.iter().map(|a| a.id).collect();
    assert_eq!(ids, [opened[0]]);
    assert_eq!(second.next_page_token, "");

    let err = client
        .list_accounts(authed(
            ListAccountsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "invalid_page_token");
    let err = client
        .list_accounts(authed(
            ListAccountsRequest {
                page_size: -1,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "invalid_argument");
}

#[tokio::test]
async fn only_a_banker_may_list_someone_elses_accounts() {
    let app = App::start().await;
    app.open("alice", "USD").await.unwrap();
    let request = || ListAccountsRequest {
        owner: "alice".into(),
        ..Default::default()
    };
    let err = app
        .client
        .clone()
        .list_accounts(authed(request(), &app.token("mallory")))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "banker_only");
    let page = app
        .client
        .clone()
        .list_accounts(authed(request(), &app.banker()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.accounts.len(), 1);
    assert_eq!(page.accounts[0].owner, "alice");
    // naming yourself is allowed
    let own = app
        .client
        .clone()
        .list_accounts(authed(request(), &app.token("alice")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.accounts.len(), 1);
}

#[tokio::test]
async fn freeze_and_unfreeze_are_banker_only_and_need_a_bounded_reason() {
    let app = App::start().await;
    let account = app.open("alice", "USD").await.unwrap();
    let mut client = app.client.clone();
    let freeze = |reason: &str| FreezeAccountRequest {
        id: account.id,
        reason: reason.into(),
    };

    let err = client
        .freeze_account(authed(freeze("mine"), &app.token("alice")))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "banker_only");
    let err = client
        .unfreeze_account(authed(
            UnfreezeAccountRequest {
                id: account.id,
                reason: String::new(),
            },
            &app.token("alice"),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::PermissionDenied, "banker_only");

    for bad in ["", "   ", &"x".repeat(201)] {
        let err = client
            .freeze_account(authed(freeze(bad), &app.banker()))
            .await
            .unwrap_err();
        assert_status(err, Code::InvalidArgument, "invalid_argument");
    }
    let err = client
        .freeze_account(authed(
            FreezeAccountRequest {
                id: 999_999,
                reason: "fraud".into(),
            },
            &app.banker(),
        ))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");

    let frozen = client
        .freeze_account(authed(freeze("suspected fraud"), &app.banker()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(frozen.status, AccountStatus::Frozen as i32);
    assert_eq!(frozen.frozen_reason, "suspected fraud");
    let seen = client
        .get_account(authed(
            GetAccountRequest { id: account.id },
            &app.token("alice"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.status, AccountStatus::Frozen as i32);

    let active = client
        .unfreeze_account(authed(
            UnfreezeAccountRequest {
                id: account.id,
                reason: "cleared".into(),
            },
            &app.banker(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.status, AccountStatus::Active as i32);
    assert_eq!(active.frozen_reason, "");
}

/// A token for `user` with the user id `uid` (a later user of the same username has another).
fn token_of(keys: &platform::token::Keys, user: &str, uid: uuid::Uuid) -> String {
    use platform::{config::TokenKind, token::Claims};
    keys.maker(TokenKind::Paseto)
        .sign(&Claims::access(
            user,
            uid,
            Role::Depositor,
            uuid::Uuid::new_v4(),
            true,
            std::time::Duration::from_secs(600),
        ))
        .unwrap()
}

#[tokio::test]
async fn accounts_belong_to_the_user_id_not_the_username() {
    let app = App::start().await;
    let old = app.open("ann", "USD").await.unwrap();
    let owner_id: uuid::Uuid =
        sqlx::query_scalar("SELECT owner_id FROM ledger.accounts WHERE id = $1")
            .bind(old.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        owner_id,
        test_support::user_id("ann"),
        "written from the token's uid"
    );

    // another user who now has the username ann (the first was deleted)
    let new_ann = token_of(&app.keys, "ann", uuid::Uuid::new_v4());
    let mut client = app.client.clone();
    for owner in ["", "ann"] {
        let page = client
            .list_accounts(authed(
                ListAccountsRequest {
                    owner: owner.into(),
                    ..Default::default()
                },
                &new_ann,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.accounts.is_empty(), "owner filter {owner:?}: {page:?}");
    }
    let err = client
        .get_account(authed(GetAccountRequest { id: old.id }, &new_ann))
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "account_not_found");
    // one account per user and currency: the new ann opens her own USD account
    let mine = client
        .create_account(authed(
            CreateAccountRequest {
                currency: "USD".into(),
            },
            &new_ann,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(mine.id, old.id);
    assert_eq!(mine.owner, "ann");
    // the first ann still sees only hers; a banker filtering by the name sees both
    let page = client
        .list_accounts(authed(ListAccountsRequest::default(), &app.token("ann")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.accounts.iter().map(|a| a.id).collect::<Vec<_>>(),
        [old.id]
    );
    let page = client
        .list_accounts(authed(
            ListAccountsRequest {
                owner: "ann".into(),
                ..Default::default()
            },
            &app.banker(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.accounts.iter().map(|a| a.id).collect::<Vec<_>>(),
        [mine.id, old.id]
    );
}
