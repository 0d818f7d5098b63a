//! `runner.list`: the live runners, from their heartbeats.

use attune_nats::api::{Empty, RunnerListReply};

use super::ApiResult;
use crate::registry::Registry;

/// The latest heartbeat of every runner that is still alive.
pub async fn list(reg: &Registry, _: Empty) -> ApiResult<RunnerListReply> {
    Ok(RunnerListReply {
        runners: reg.liveness.runners(),
    })
}
