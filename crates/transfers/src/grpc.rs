//! gRPC handlers. RPCs not written yet answer UNIMPLEMENTED (generated default stubs).

use proto::transfers::v1::transfers_service_server::TransfersService;

pub struct TransfersApi {}

#[tonic::async_trait]
impl TransfersService for TransfersApi {}
