//! gRPC handlers: extract → call the domain → map the result. Nothing else lives here.

use platform::{
    ApiError, Caller,
    caller::{RpcResult, authenticate, client_ip, user_agent},
    token::Role,
};
use proto::auth::v1::{self as pb, auth_service_server::AuthService};
use tonic::{Request, Response, Status};

use crate::domain::{
    Auth, User,
    sessions::{self, Client, Issued},
    users::{self, Changes, SignUp},
    verification,
};

pub struct AuthApi {
    auth: Auth,
}

impl AuthApi {
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        authenticate(req.metadata(), &self.auth.tokens).map_err(Status::from)
    }
}

fn ok<T>(v: T) -> RpcResult<T> {
    Ok(Response::new(v))
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> RpcResult<pb::CreateUserResponse> {
        let trace = traceparent(&req);
        let r = req.into_inner();
        plain_text(&[
            ("username", &r.username),
            ("full_name", &r.full_name),
            ("email", &r.email),
        ])?;
        let signup = SignUp::parse(&r.username, &r.full_name, &r.email, &r.password)?;
        let user = users::create_user(&self.auth, signup, trace.as_deref()).await?;
        ok(pb::CreateUserResponse {
            user: Some(user_pb(&user)),
        })
    }

    async fn login_user(
        &self,
        req: Request<pb::LoginUserRequest>,
    ) -> RpcResult<pb::LoginUserResponse> {
        let client = Client {
            user_agent: user_agent(req.metadata()),
            ip: client_ip(&req),
        };
        let r = req.into_inner();
        plain_text(&[("username", &r.username)])?;
        let (user, t) = sessions::login(&self.auth, &r.username, &r.password, &client).await?;
        ok(pb::LoginUserResponse {
            user: Some(user_pb(&user)),
            session_id: t.session_id.to_string(),
            access_token: t.access_token,
            access_token_expires_at: Some(proto::timestamp(t.access_expires_at)),
            refresh_token: t.refresh_token,
            refresh_token_expires_at: Some(proto::timestamp(t.refresh_expires_at)),
        })
    }

    async fn renew_access_token(
        &self,
        req: Request<pb::RenewAccessTokenRequest>,
    ) -> RpcResult<pb::RenewAccessTokenResponse> {
        let r = req.into_inner();
        plain_text(&[("refresh_token", &r.refresh_token)])?;
        if r.refresh_token.trim().is_empty() {
            return Err(ApiError::invalid_field("refresh_token", "required").into());
        }
        let Issued {
            session_id,
            access_token,
            access_expires_at,
            refresh_token,
            refresh_expires_at,
        } = sessions::renew(&self.auth, &r.refresh_token).await?;
        ok(pb::RenewAccessTokenResponse {
            access_token,
            access_token_expires_at: Some(proto::timestamp(access_expires_at)),
            refresh_token,
            refresh_token_expires_at: Some(proto::timestamp(refresh_expires_at)),
            session_id: session_id.to_string(),
        })
    }

    async fn logout(&self, req: Request<pb::LogoutRequest>) -> RpcResult<pb::LogoutResponse> {
        let caller = self.caller(&req)?;
        let sid = sessions::logout(&self.auth, &caller).await?;
        ok(pb::LogoutResponse {
            session_id: sid.to_string(),
        })
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> RpcResult<pb::User> {
        let caller = self.caller(&req)?;
        plain_text(&[("username", &req.get_ref().username)])?;
        let user = users::get_user(&self.auth, &caller, &req.get_ref().username).await?;
        ok(user_pb(&user))
    }

    async fn update_user(&self, req: Request<pb::UpdateUserRequest>) -> RpcResult<pb::User> {
        let caller = self.caller(&req)?;
        let trace = traceparent(&req);
        let r = req.into_inner();
        plain_text(&[
            ("username", &r.username),
            ("full_name", r.full_name.as_deref().unwrap_or("")),
            ("email", r.email.as_deref().unwrap_or("")),
        ])?;
        let changes = Changes::parse(
            r.full_name.as_deref(),
            r.email.as_deref(),
            r.password.as_deref(),
            r.notify_money_received,
        )?;
        let user =
            users::update_user(&self.auth, &caller, &r.username, changes, trace.as_deref()).await?;
        ok(user_pb(&user))
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> RpcResult<pb::DeleteUserResponse> {
        let caller = self.caller(&req)?;
        let trace = traceparent(&req);
        let ip = client_ip(&req);
        let r = req.into_inner();
        plain_text(&[("username", &r.username)])?;
        let d = users::delete_user(
            &self.auth,
            &caller,
            &r.username,
            &r.password,
            &ip,
            trace.as_deref(),
        )
        .await?;
        ok(pb::DeleteUserResponse {
            username: d.username,
            id: d.id.to_string(),
            sessions_revoked: i32::try_from(d.sessions_revoked).unwrap_or(i32::MAX),
        })
    }

    async fn verify_email(
        &self,
        req: Request<pb::VerifyEmailRequest>,
    ) -> RpcResult<pb::VerifyEmailResponse> {
        let r = req.into_inner();
        plain_text(&[("secret_code", &r.secret_code)])?;
        let username = verification::verify_email(&self.auth, r.email_id, &r.secret_code).await?;
        ok(pb::VerifyEmailResponse {
            email_verified: true,
            username,
            message: "email verified; access tokens issued before now still say unverified: \
                      renew the access token to carry the new flag"
                .into(),
        })
    }

    async fn resend_verification_email(
        &self,
        req: Request<pb::ResendVerificationEmailRequest>,
    ) -> RpcResult<pb::ResendVerificationEmailResponse> {
        let caller = self.caller(&req)?;
        let email = verification::resend(&self.auth, &caller, traceparent(&req).as_deref()).await?;
        ok(pb::ResendVerificationEmailResponse { email })
    }
}

/// Refuses NUL and the other control characters in text that reaches a query or a log line
/// (PostgreSQL refuses NUL in text: it was a 500), by the same rule as the gateway's, so a caller
/// of this port directly meets it too. Passwords are left alone: they are hashed, never stored.
fn plain_text(fields: &[(&str, &str)]) -> Result<(), Status> {
    for (field, value) in fields {
        platform::text::reject_control_chars(field, value)?;
    }
    Ok(())
}

/// The W3C `traceparent` the outbox event carries to the mailer: this call's server span as the
/// parent (so the mailer's span hangs under it in the trace), else what the gateway forwarded, if
/// well formed (`00-<32 hex>-<16 hex>-<2 hex>`).
fn traceparent<T>(req: &Request<T>) -> Option<String> {
    if let Some(current) = platform::telemetry::current_traceparent() {
        return Some(current);
    }
    let v = req.metadata().get("traceparent")?.to_str().ok()?.trim();
    platform::telemetry::TraceParent::parse(v).map(|_| v.to_owned())
}

fn user_pb(u: &User) -> pb::User {
    pb::User {
        username: u.username.clone(),
        full_name: u.full_name.clone(),
        email: u.email.clone(),
        role: match u.role() {
            Role::Depositor => pb::Role::Depositor,
            Role::Banker => pb::Role::Banker,
        } as i32,
        email_verified: u.email_verified,
        password_changed_at: Some(proto::timestamp(u.password_changed_at)),
        created_at: Some(proto::timestamp(u.created_at)),
        id: u.id.to_string(),
        notify_money_received: u.notify_money_received,
    }
}
