//! Operator actions (the `auth create-user` command), also callable in-process by tests of other
//! crates that need a banker: `auth::admin::create_user(&pool, "bob", "Bob", "bob@example.com",
//! "password123", Role::Banker)`.

use platform::token::Role;
use sqlx::PgPool;

use super::{
    AuthError, Hasher, User,
    users::{SignUp, publish_contact},
};
use crate::store;

/// Creates a user of any role with a verified email (the operator vouches for the address; no
/// verification email is sent; the mailer gets its `user.contact_updated`). The only way to
/// create a banker.
pub async fn create_user(
    pool: &PgPool,
    username: &str,
    full_name: &str,
    email: &str,
    password: &str,
    role: Role,
) -> Result<User, AuthError> {
    let s = SignUp::parse(username, full_name, email, password)?;
    let hashed = Hasher::owasp()?.hash(&s.password).await?;
    let mut tx = pool.begin().await?;
    let user = store::insert_user(
        &mut tx,
        &store::NewUser {
            username: s.username.as_str(),
            full_name: s.full_name.as_str(),
            email: s.email.as_str(),
            hashed_password: &hashed,
            role: role.as_str(),
            email_verified: true,
        },
    )
    .await
    .map_err(AuthError::from_insert_user)?;
    // the mailer learns the user like any other (its "money received" emails)
    publish_contact(&mut tx, &user, None).await?;
    tx.commit().await?;
    Ok(user)
}
