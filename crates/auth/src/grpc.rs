//! gRPC handlers. RPCs not written yet answer UNIMPLEMENTED (generated default stubs).

use proto::auth::v1::auth_service_server::AuthService;

pub struct AuthApi {}

#[tonic::async_trait]
impl AuthService for AuthApi {}
