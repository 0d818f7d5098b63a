//! `resolve`: which version and subject an action would use, and why.
//!
//! Answered from the same [`View`](crate::view::View) as the router, so `attune resolve` tells
//! exactly what a by-name invocation would do at that moment.

use attune_nats::api::{ResolveReply, ResolveRequest};
use attune_nats::wire::ApiError;

use super::ApiResult;
use crate::registry::Registry;

/// Resolves an action, optionally under another constraint. An unknown action is a 404 and an
/// invalid constraint a 400 (the codes of the resolver's refusal).
pub async fn resolve(reg: &Registry, req: ResolveRequest) -> ApiResult<ResolveReply> {
    reg.view
        .resolve(&req.action, req.constraint.as_deref())
        .map_err(|refusal| ApiError::new(refusal.code().code(), refusal.to_string()))
}
