//! gRPC handlers. RPCs not written yet answer UNIMPLEMENTED (generated default stubs).

use proto::accounts::v1::accounts_service_server::AccountsService;

pub struct AccountsApi {}

#[tonic::async_trait]
impl AccountsService for AccountsApi {}
