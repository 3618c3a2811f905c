//! Scorers: among agents that pass every filter, which is best? Each has a name; an agent's
//! score is the list of [`SCORERS`]' scores, compared in order (the first that differs
//! decides). Higher is better; ties go to the agent whose name sorts first, so placement is
//! deterministic. Integer arithmetic only: the same snapshot scores the same everywhere.

use baton_api::ResourceAmounts;

use super::compiled::{Check, FieldIndex};
use super::filters::Candidate;
use super::{AgentSlot, AppState, Request};

/// A ranking of feasible agents.
pub struct Scorer {
    /// Names the scorer in docs and tests.
    pub name: &'static str,
    pub score: fn(&Candidate<'_>) -> i64,
}

/// Every scorer, most significant first.
pub const SCORERS: [Scorer; 2] = [
    // Spread first: an app that spreads (GROUP_BY, MAX_PER) loses more to an uneven spread
    // than to a loose fit. Every agent scores 0 for an app that does not spread.
    Scorer { name: "spread", score: |c| spread(c.index, c.app, c.fields) },
    // Then bin-packing on the dominant resource.
    Scorer { name: "binpack", score: |c| binpack(c.agent, c.request) as i64 },
];

/// An agent's scores, in the order of [`SCORERS`].
pub type Score = [i64; SCORERS.len()];

pub fn score(candidate: &Candidate<'_>) -> Score {
    SCORERS.each_ref().map(|s| (s.score)(candidate))
}

/// Shares are in millionths.
const SCALE: u64 = 1_000_000;

/// How full the agent's most allocated resource would be with the instance placed, in
/// millionths: bin-packing prefers the fullest agent that still fits, so instances pile up
/// on busy agents and whole agents stay free for instances that need most of a machine.
pub fn binpack(agent: &AgentSlot<'_>, request: &Request<'_>) -> u64 {
    let total = agent.record.resources;
    let after = total.minus(agent.free).plus(request.resources);
    dominant_share(after, total)
}

/// The largest share `used / total` over the resources the agent has, in millionths.
/// (Amounts are far below 2^44, so `used × 10^6` fits in 64 bits.)
pub fn dominant_share(used: ResourceAmounts, total: ResourceAmounts) -> u64 {
    [
        (used.millicpus, total.millicpus),
        (used.mem_mib, total.mem_mib),
        (used.disk_mib, total.disk_mib),
        (used.gpus, total.gpus),
    ]
    .into_iter()
    .filter(|(_, total)| *total > 0)
    .map(|(used, total)| used.saturating_mul(SCALE) / total)
    .max()
    .unwrap_or(0)
}

/// Spreading for `GROUP_BY` and `MAX_PER`: the fewer of the app's instances share agent
/// `i`'s value, the better (0 is best; more instances score lower).
pub fn spread(i: usize, app: &AppState, fields: &[FieldIndex]) -> i64 {
    app.compiled
        .iter()
        .filter(|c| matches!(c.check, Check::GroupBy { .. } | Check::MaxPer(_)))
        .map(|c| {
            let value = fields[app.field_ids[c.field]].value_of[i];
            -(value.map_or(0, |v| app.counts[c.field].of(v)) as i64)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(millicpus: u64, mem_mib: u64) -> ResourceAmounts {
        ResourceAmounts { millicpus, mem_mib, disk_mib: 0, gpus: 0 }
    }

    #[test]
    fn the_dominant_share_is_the_fullest_resource() {
        let total = amounts(4000, 8192);
        assert_eq!(dominant_share(amounts(1000, 1024), total), 250_000, "cpus dominate: 1/4 > 1/8");
        assert_eq!(dominant_share(amounts(1000, 4096), total), 500_000, "mem dominates: 1/2");
        assert_eq!(dominant_share(amounts(0, 0), total), 0);
        let no_disk = dominant_share(ResourceAmounts { disk_mib: 5, ..amounts(0, 0) }, total);
        assert_eq!(no_disk, 0, "a resource the agent does not have is not counted");
    }
}
