//! `rule.list`, `rule.get`, `rule.set_enabled`.

use attune_nats::api::{
    RefRequest, RuleListReply, RuleListRequest, RuleReply, RuleSetEnabledRequest,
};

use super::{not_found, ApiResult};
use crate::registry::Registry;

/// All rules, or one pack's.
pub async fn list(reg: &Registry, req: RuleListRequest) -> ApiResult<RuleListReply> {
    let rules = reg
        .snapshot()
        .await?
        .rules
        .into_iter()
        .filter(|r| req.pack.as_ref().is_none_or(|p| &r.pack == p))
        .collect();
    Ok(RuleListReply { rules })
}

/// One rule by ref.
pub async fn get(reg: &Registry, req: RefRequest) -> ApiResult<RuleReply> {
    reg.snapshot()
        .await?
        .rules
        .into_iter()
        .find(|r| r.reference == req.reference)
        .map(|rule| RuleReply { rule })
        .ok_or_else(|| not_found(format!("no rule \"{}\" is registered", req.reference)))
}

/// Enables or disables a rule.
pub async fn set_enabled(reg: &Registry, req: RuleSetEnabledRequest) -> ApiResult<RuleReply> {
    let rule = reg.set_rule_enabled(req.reference, req.enabled).await?;
    Ok(RuleReply { rule })
}
