//! `action.list`, `action.get`.

use attune_nats::api::{ActionListReply, ActionListRequest, ActionReply, RefRequest};
use attune_nats::resolve::Refusal;

use super::{not_found, ApiResult};
use crate::registry::Registry;

/// All actions, or one pack's.
pub async fn list(reg: &Registry, req: ActionListRequest) -> ApiResult<ActionListReply> {
    let actions = reg
        .snapshot()
        .await?
        .actions
        .into_iter()
        .filter(|a| req.pack.as_ref().is_none_or(|p| &a.pack == p))
        .collect();
    Ok(ActionListReply { actions })
}

/// One action by ref.
pub async fn get(reg: &Registry, req: RefRequest) -> ApiResult<ActionReply> {
    reg.snapshot()
        .await?
        .actions
        .into_iter()
        .find(|a| a.reference == req.reference)
        .map(|action| ActionReply { action })
        .ok_or_else(|| not_found(Refusal::UnknownAction(req.reference).to_string()))
}
