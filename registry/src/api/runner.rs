//! `runner.list`: the live runners, from their heartbeats, a page at a time.
//!
//! With hundreds of runners the heartbeats no longer fit in one message (about 1.2 KiB each with
//! ten versions), so a page holds at most [`RUNNER_PAGE_MAX`] runners and
//! [`RUNNER_PAGE_BYTES`] of them, and says where the next page starts.

use attune_nats::api::{RunnerListReply, RunnerListRequest, RUNNER_PAGE_BYTES, RUNNER_PAGE_MAX};

use super::ApiResult;
use crate::registry::Registry;

/// One page of the latest heartbeats of the runners still alive, by id.
pub async fn list(reg: &Registry, request: RunnerListRequest) -> ApiResult<RunnerListReply> {
    Ok(page(reg.liveness.runners(), &request))
}

/// The page of `runners` (sorted by id) that `request` asks for.
fn page(
    runners: Vec<attune_nats::RunnerHeartbeat>,
    request: &RunnerListRequest,
) -> RunnerListReply {
    let limit = request
        .limit
        .unwrap_or(RUNNER_PAGE_MAX)
        .clamp(1, RUNNER_PAGE_MAX);
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut rest = runners
        .into_iter()
        .filter(|r| request.after.as_ref().is_none_or(|a| r.id > *a))
        .peekable();
    while let Some(r) = rest.peek() {
        let size = serde_json::to_vec(r).map_or(0, |b| b.len());
        if out.len() == limit || (!out.is_empty() && bytes + size > RUNNER_PAGE_BYTES) {
            break;
        }
        bytes += size;
        out.push(rest.next().expect("peeked"));
    }
    let next = rest
        .peek()
        .and(out.last())
        .map(|last: &attune_nats::RunnerHeartbeat| last.id.clone());
    RunnerListReply { runners: out, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(id: &str) -> attune_nats::RunnerHeartbeat {
        attune_nats::RunnerHeartbeat::new(id, "h", Vec::new(), 1)
    }

    #[test]
    fn pages_follow_one_another_without_gaps() {
        let all: Vec<_> = (0..7).map(|i| runner(&format!("r{i}"))).collect();
        let mut seen = Vec::new();
        let mut request = RunnerListRequest {
            after: None,
            limit: Some(3),
        };
        loop {
            let page = page(all.clone(), &request);
            assert!(page.runners.len() <= 3);
            seen.extend(page.runners.iter().map(|r| r.id.clone()));
            match page.next {
                Some(next) => request.after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (0..7).map(|i| format!("r{i}")).collect::<Vec<_>>());
        let whole = page(all, &RunnerListRequest::default());
        assert_eq!((whole.runners.len(), whole.next), (7, None));
    }
}
