//! Replacement slots: what the health policy's budget counts.
//!
//! A slot is taken when an instance is killed for its health, and held until an instance
//! launched to replace it has proved healthy — whatever happens in between: the killed
//! process is still stopping; it has ended and no replacement is launched yet (the app backs
//! off, or `maximumOverCapacity` leaves no room); the replacement is starting, or exited at
//! start, was counted as a failure and removed, and another one is due; the replacement was
//! itself killed for its health. That last case costs no second slot: the same place is being
//! refilled, so a pool whose replacements cannot become healthy still has only the budget's
//! worth of originals killed.
//!
//! Nothing here is remembered between ticks; it is all in the store, so a new leader counts
//! the same slots and a failover frees none:
//! - a health kill that takes a slot marks the killed instance's record (`holdsSlot`, written
//!   with the stop); that record *is* the slot. The planner keeps it — while the process
//!   stops, after it ended, after its agent went away — as long as the slot is held. A kill
//!   of an instance that was itself filling a held slot does not mark it;
//! - an instance launched to fill a slot names it in `replaces`, written with the launch.
//!
//! A slot is released when an instance that fills it (wanted running, not ended) has proved
//! healthy ([`InstanceState::proven_healthy`]: `maxConsecutiveFailures` passes in a row), or
//! when nothing fills it and the app has as many healthy instances of its current version as
//! it wants (it was scaled down, or an instance came back with its agent): then nothing is
//! left to replace. Old-version instances a deployment is replacing do not count, nor new
//! ones not healthy yet: they may fail as the killed one did.
//! A released slot's record is unmarked; like any ended instance's, it goes when the retention
//! of ended instances says.

use std::collections::BTreeMap;

use crate::snapshot::InstanceState;

use super::classify::AppInstances;

/// One held slot.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'s> {
    /// The instance killed for its health.
    pub killed: &'s InstanceState,
    /// The instance launched to fill it, while one is wanted running and has not ended.
    pub replacement: Option<&'s InstanceState>,
}

/// An app's replacement slots.
#[derive(Debug, Default)]
pub struct Slots<'s> {
    /// Held, oldest killed instance first.
    pub held: Vec<Slot<'s>>,
    /// Released this tick: their records are unmarked (and go when retention says).
    pub released: Vec<&'s InstanceState>,
}

impl<'s> Slots<'s> {
    /// The slots of an app with `wanted` instances, from its classified instances.
    pub fn of(sets: &AppInstances<'s>, wanted: usize) -> Self {
        let mut killed: Vec<&'s InstanceState> =
            sets.stopping.iter().chain(&sets.finished).copied().filter(|i| i.record.holds_slot).collect();
        if killed.is_empty() {
            return Self::default();
        }
        killed.sort_by(|a, b| (a.record.created_at, a.id()).cmp(&(b.record.created_at, b.id())));
        // Instances that may still serve, by the slot they fill.
        let live: Vec<&'s InstanceState> =
            sets.current.iter().chain(&sets.old).chain(&sets.unreachable).copied().collect();
        let mut fillers: BTreeMap<&str, Vec<&'s InstanceState>> = BTreeMap::new();
        for &instance in &live {
            if let Some(slot) = instance.record.replaces.as_deref() {
                fillers.entry(slot).or_default().push(instance);
            }
        }
        // Unfilled slots are held only while the app lacks healthy instances of its version:
        // the old ones a deployment replaces fill no place, and new ones not healthy yet may
        // fail as the killed one did. (Counting them, a pool failing during a deployment freed
        // each slot as soon as it was taken, and the policy killed past its budget: chaos
        // seeds 2026, 3009, 3011 and 4005 — the whole old pool killed one per tick.)
        let healthy = sets.current.iter().filter(|i| i.is_healthy()).count();
        let mut shortfall = wanted.saturating_sub(healthy);
        let mut slots = Self::default();
        for killed in killed {
            let filling = fillers.get(killed.id()).map(Vec::as_slice).unwrap_or_default();
            let healed = filling.iter().any(|r| r.proven_healthy());
            let needed = !filling.is_empty() || shortfall > 0;
            if healed || !needed {
                slots.released.push(killed);
                continue;
            }
            if filling.is_empty() {
                shortfall -= 1;
            }
            slots.held.push(Slot { killed, replacement: filling.first().copied() });
        }
        slots
    }

    /// Whether the instance's record is a held slot (and must be kept).
    pub fn holds(&self, instance: &InstanceState) -> bool {
        self.held.iter().any(|s| s.killed.id() == instance.id())
    }

    /// Whether the instance was launched to fill a held slot: killing it for its health takes
    /// no new slot.
    pub fn fills(&self, instance: &InstanceState) -> bool {
        instance.record.replaces.as_deref().is_some_and(|slot| self.held.iter().any(|s| s.killed.id() == slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::classify::Reachability;
    use crate::snapshot::Snapshot;
    use crate::testing::{agent, app, instance, now, snapshot};

    fn slots_of(snapshot: &Snapshot, wanted: usize) -> Vec<(String, Option<String>)> {
        let app = &snapshot.apps[0];
        let reach = Reachability::new(snapshot, now());
        let sets =
            AppInstances::classify(snapshot.instances.values(), &app.version(), app.spec.unreachable_strategy, &reach);
        Slots::of(&sets, wanted)
            .held
            .iter()
            .map(|s| (s.killed.id().to_string(), s.replacement.map(|r| r.id().to_string())))
            .collect()
    }

    fn pair(killed: &str, replacement: Option<&str>) -> (String, Option<String>) {
        (killed.to_string(), replacement.map(String::from))
    }

    #[test]
    fn a_kill_holds_a_slot_from_stopping_through_backoff_until_its_replacement_proved_healthy() {
        let pool = app("pool").instances(3).tcp_check(3).build();
        let agents = vec![agent("a1").build()];
        let others = || (1..3).map(|n| instance(&pool, "a1", n).failing(3).build());
        // Stopping.
        let mut instances: Vec<_> = others().collect();
        instances.push(instance(&pool, "a1", 0).failing(3).killed_for_health().build());
        assert_eq!(slots_of(&snapshot(&[&pool], agents.clone(), instances), 3), [pair("pool-000", None)]);
        // Ended; the replacement not launched yet (backoff, or no room).
        let mut instances: Vec<_> = others().collect();
        instances.push(instance(&pool, "a1", 0).failed(1).killed_for_health().build());
        assert_eq!(slots_of(&snapshot(&[&pool], agents.clone(), instances.clone()), 3), [pair("pool-000", None)]);
        // Its replacement starts, fails its checks, is killed itself: still the one slot.
        let mut starting = instances.clone();
        starting.push(instance(&pool, "a1", 5).running().replacing("pool-000").build());
        assert_eq!(slots_of(&snapshot(&[&pool], agents.clone(), starting), 3), [pair("pool-000", Some("pool-005"))]);
        let mut rekilled = instances.clone();
        rekilled.push(
            instance(&pool, "a1", 5).failing(3).never_healthy().replacing("pool-000").stopped("Unhealthy").build(),
        );
        assert_eq!(slots_of(&snapshot(&[&pool], agents.clone(), rekilled), 3), [pair("pool-000", None)]);
        // Passing once: held. Passing as often in a row as it takes failures to kill: released.
        let mut recovering = instances.clone();
        recovering.push(instance(&pool, "a1", 6).recovered(1).never_healthy().replacing("pool-000").build());
        assert_eq!(slots_of(&snapshot(&[&pool], agents.clone(), recovering), 3), [pair("pool-000", Some("pool-006"))]);
        let mut healed = instances;
        healed.push(instance(&pool, "a1", 6).passing().replacing("pool-000").build());
        assert!(slots_of(&snapshot(&[&pool], agents, healed), 3).is_empty());
    }

    #[test]
    fn a_slot_nothing_fills_goes_when_the_app_needs_no_more_instances() {
        let pool = app("pool").instances(3).tcp_check(3).build();
        let mut instances: Vec<_> = (1..3).map(|n| instance(&pool, "a1", n).passing().build()).collect();
        instances.push(instance(&pool, "a1", 0).failed(1).killed_for_health().build());
        let snap = snapshot(&[&pool], vec![agent("a1").build()], instances);
        assert_eq!(slots_of(&snap, 3).len(), 1);
        assert!(slots_of(&snap, 2).is_empty(), "scaled down to what is left: nothing to replace");
    }

    /// Chaos seed 2026: app echo (4 wanted, a deployment under way) failing its checks; the
    /// old-version instances still running did not make the killed one's place filled.
    #[test]
    fn old_instances_a_deployment_replaces_do_not_fill_a_slot() {
        let old = app("pool").instances(3).tcp_check(3).env("CHANGE", "1").build();
        let pool = app("pool").instances(3).tcp_check(3).env("CHANGE", "2").build();
        let mut instances: Vec<_> = (1..4).map(|n| instance(&old, "a1", n).failing(2).build()).collect();
        instances.push(instance(&old, "a1", 0).failed(1).killed_for_health().build());
        // The deployment launched the new version in full; none is healthy yet.
        instances.extend((5..8).map(|n| instance(&pool, "a1", n).running().build()));
        let snap = snapshot(&[&pool], vec![agent("a1").build()], instances.clone());
        assert_eq!(slots_of(&snap, 3), [pair("pool-000", None)], "held until the new version is healthy");
        let healthy: Vec<_> = instances
            .into_iter()
            .filter(|i| i.id() < "pool-005")
            .chain((5..8).map(|n| instance(&pool, "a1", n).passing().build()))
            .collect();
        let snap = snapshot(&[&pool], vec![agent("a1").build()], healthy);
        assert!(slots_of(&snap, 3).is_empty(), "the app is at full healthy strength: nothing to replace");
    }

    #[test]
    fn a_healed_slots_replacement_killed_later_takes_a_slot_of_its_own() {
        let pool = app("pool").instances(3).tcp_check(3).build();
        let mut instances: Vec<_> = (1..3).map(|n| instance(&pool, "a1", n).failing(3).build()).collect();
        // pool-000 was healed by pool-005, which went bad later and was killed.
        instances.push(instance(&pool, "a1", 5).failing(3).replacing("pool-000").killed_for_health().build());
        let snap = snapshot(&[&pool], vec![agent("a1").build()], instances);
        assert_eq!(slots_of(&snap, 3), [pair("pool-005", None)]);
    }

    #[test]
    fn a_released_slot_is_unmarked_not_held() {
        let pool = app("pool").instances(2).tcp_check(3).build();
        let instances = vec![
            instance(&pool, "a1", 1).passing().build(),
            instance(&pool, "a1", 0).failing(3).killed_for_health().build(),
            instance(&pool, "a1", 5).passing().replacing("pool-000").build(),
        ];
        let snap = snapshot(&[&pool], vec![agent("a1").build()], instances);
        let app = &snap.apps[0];
        let reach = Reachability::new(&snap, now());
        let sets =
            AppInstances::classify(snap.instances.values(), &app.version(), app.spec.unreachable_strategy, &reach);
        let slots = Slots::of(&sets, 2);
        assert!(slots.held.is_empty());
        assert_eq!(slots.released.iter().map(|i| i.id()).collect::<Vec<_>>(), ["pool-000"]);
    }
}
