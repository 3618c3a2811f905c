//! Scorers: among agents that pass every filter, which is best? Higher is better; ties go to
//! the agent whose name sorts first, so placement is deterministic.

use super::{AgentSlot, Request};

/// Spreads an app: fewest instances of the same app first, then the most free memory.
/// (Bin-packing for large instances replaces this with the full scheduler.)
pub fn spread(agent: &AgentSlot<'_>, request: &Request<'_>) -> (i64, u64) {
    let same_app = agent.instances_of_app.get(request.app_uid).copied().unwrap_or(0);
    (-(same_app as i64), agent.free.mem_mib)
}
