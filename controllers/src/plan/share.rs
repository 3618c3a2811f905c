//! Stage: share (DESIGN.md §5, §10) — the order in which the platform places every scope's
//! demand, by weighted **dominant-resource fairness**: the platform's own demand first (its
//! apps — tenants' controllers among them — are never starved), then one instance at a time
//! to the tenant whose weighted dominant share is the smallest, counting what each would hold
//! as it goes (progressive filling). A tenant's dominant share is the largest of
//! `held / capacity` over cpus, mem, disk and gpus; weighted, it is divided by the tenant's
//! weight (0: it gets only what no other tenant asks for).
//!
//! Exact integer arithmetic throughout — milli-cpus, MiB, whole GPUs; fractions compared by
//! their continued-fraction expansion in u128, so no product overflows and no float rounds a
//! share to zero (Kueue's per-mille shares did) or leaves 4.44e-16 behind (Mesos' doubles did).
//! Deterministic: ties go to the scope first by name.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use baton_api::{ResourceAmounts, Scope};

use super::place::Demand;
use super::vocabulary::{Event, EventType, Regarding};
use crate::snapshot::Snapshot;

/// Compares `n1/d1` with `n2/d2` exactly; a zero denominator is infinity (two infinities are
/// equal). Euclid's algorithm on the two fractions at once: integer parts first, then the
/// remainders' reciprocals, reversed — every step stays within the operands, so nothing
/// overflows.
pub fn fraction_cmp(mut n1: u128, mut d1: u128, mut n2: u128, mut d2: u128) -> Ordering {
    let mut flipped = false;
    loop {
        let ordering = match (d1 == 0, d2 == 0) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                let (q1, q2) = (n1 / d1, n2 / d2);
                if q1 != q2 {
                    q1.cmp(&q2)
                } else {
                    let (r1, r2) = (n1 % d1, n2 % d2);
                    match (r1 == 0, r2 == 0) {
                        (true, true) => Ordering::Equal,
                        (true, false) => Ordering::Less,
                        (false, true) => Ordering::Greater,
                        (false, false) => {
                            // r1/d1 < r2/d2  ⇔  d1/r1 > d2/r2.
                            (n1, d1, n2, d2) = (d1, r1, d2, r2);
                            flipped = !flipped;
                            continue;
                        }
                    }
                }
            }
        };
        return if flipped { ordering.reverse() } else { ordering };
    }
}

/// A weighted dominant share, as an exact fraction `held / (capacity × weight)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub num: u128,
    pub den: u128,
}

impl Share {
    /// The weighted dominant share of `held` in `capacity` (resources the cluster lacks are
    /// left out) with `weight`.
    pub fn of(held: &[u64; 4], capacity: &[u64; 4], weight: u64) -> Share {
        let mut dominant = Share { num: 0, den: 1 };
        for (h, c) in held.iter().zip(capacity) {
            if *c == 0 {
                continue;
            }
            if fraction_cmp(u128::from(*h), u128::from(*c), dominant.num, dominant.den) == Ordering::Greater {
                dominant = Share { num: u128::from(*h), den: u128::from(*c) };
            }
        }
        // Weight 0: infinite, unless it holds nothing of anything the cluster has.
        Share { num: dominant.num.max(u128::from(weight == 0)), den: dominant.den * u128::from(weight) }
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> Ordering {
        fraction_cmp(self.num, self.den, other.num, other.den)
    }
}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Amounts as the four resources shares count.
pub fn amounts(r: ResourceAmounts) -> [u64; 4] {
    [r.millicpus, r.mem_mib, r.disk_mib, r.gpus]
}

/// One claimant in the filling: what it holds, its weight, and what it asks for, each instance
/// taking `ask`.
#[derive(Debug, Clone)]
pub struct Claim<T> {
    pub held: [u64; 4],
    pub weight: u64,
    /// `(item, instances, each instance's resources)`, in the claimant's own order.
    pub asks: Vec<(T, usize, [u64; 4])>,
}

/// Progressive filling over `claims` (in tie-break order): one instance at a time to the
/// claimant with the smallest weighted dominant share of what it would hold. Returns the items
/// in that order, consecutive instances of one item merged: `(claimant, item, instances)`.
pub fn fill<T: Clone>(capacity: &[u64; 4], claims: Vec<Claim<T>>) -> Vec<(usize, T, usize)> {
    fill_by(claims, |_, held, weight| Share::of(held, capacity, weight))
}

/// As [`fill`], each claimant's share measured by `share(claimant, held, weight)`.
fn fill_by<T: Clone>(
    mut claims: Vec<Claim<T>>,
    share: impl Fn(usize, &[u64; 4], u64) -> Share,
) -> Vec<(usize, T, usize)> {
    // Min-heap on (share, claimant index): ties go to the earlier claimant.
    let mut heap: BinaryHeap<std::cmp::Reverse<(Share, usize)>> = claims
        .iter()
        .enumerate()
        .filter(|(_, c)| c.asks.iter().any(|(_, n, _)| *n > 0))
        .map(|(i, c)| std::cmp::Reverse((share(i, &c.held, c.weight), i)))
        .collect();
    let mut next: Vec<usize> = vec![0; claims.len()];
    let mut out: Vec<(usize, T, usize)> = Vec::new();
    // The claimant and ask of the last entry of `out`: the next instance of the same merges.
    let mut last: Option<(usize, usize)> = None;
    while let Some(std::cmp::Reverse((_, i))) = heap.pop() {
        let claim = &mut claims[i];
        while next[i] < claim.asks.len() && claim.asks[next[i]].1 == 0 {
            next[i] += 1;
        }
        let Some((item, left, each)) = claim.asks.get_mut(next[i]) else { continue };
        *left -= 1;
        for (h, e) in claim.held.iter_mut().zip(each.iter()) {
            *h = h.saturating_add(*e);
        }
        match out.last_mut() {
            Some((_, _, n)) if last == Some((i, next[i])) => *n += 1,
            _ => out.push((i, item.clone(), 1)),
        }
        last = Some((i, next[i]));
        if claim.asks.iter().skip(next[i]).any(|(_, n, _)| *n > 0) {
            heap.push(std::cmp::Reverse((share(i, &claim.held, claim.weight), i)));
        }
    }
    out
}

/// The share stage: `queue` (the platform's own demand, then other scopes' requests) in the
/// order the platform places it: the platform's own first (tenants' controllers before its
/// other apps); then, of each tenant's demand, what fits in its **guarantee** (as much of each
/// guaranteed resource as it holds, at most) — by progressive filling on the share of its
/// guarantee each would hold; then the rest by weighted dominant-resource fairness over the
/// cluster, counting what the first pass gave.
pub fn order<'d>(snapshot: &Snapshot, queue: Vec<Demand<'d>>) -> Vec<Demand<'d>> {
    let (mut own, others): (Vec<Demand<'d>>, Vec<Demand<'d>>) = queue.into_iter().partition(|d| d.scope.places());
    // Tenants' controllers before the platform's other apps: without them no tenant moves.
    own.sort_by_key(|d| !is_tenant_controller(d.app));
    if others.is_empty() {
        return own;
    }
    let capacity = amounts(snapshot.agents.values().fold(ResourceAmounts::default(), |sum, a| sum.plus(a.resources)));
    let held = held_by_scope(snapshot);
    let tenant = |scope: &Scope| match scope {
        Scope::Tenant(name) => snapshot.tenants.iter().find(|t| t.metadata.name.as_deref() == Some(name.as_str())),
        Scope::Platform => None,
    };
    // One claimant per scope, by scope (name order): ties go to the first.
    let mut scopes: BTreeMap<&Scope, Vec<Demand<'d>>> = BTreeMap::new();
    for demand in others {
        scopes.entry(demand.scope).or_default().push(demand);
    }
    let (mut guaranteed, mut rest, mut guarantees) = (Vec::new(), Vec::new(), Vec::new());
    for (scope, demands) in &scopes {
        let holds = held.get(scope).copied().unwrap_or([0; 4]);
        let guarantee = tenant(scope).map_or([None; 4], |t| t.spec.guarantee.amounts());
        let weight = tenant(scope).map_or(1, |t| u64::from(t.spec.weight));
        let mut would = holds;
        let (mut within, mut beyond) = (Vec::new(), Vec::new());
        for demand in demands {
            let each = amounts(demand.app.spec.resources.amounts());
            let n = fitting(&would, &each, &guarantee, demand.count);
            for (w, e) in would.iter_mut().zip(each) {
                *w = w.saturating_add(e.saturating_mul(n as u64));
            }
            if n > 0 {
                within.push((*demand, n, each));
            }
            if demand.count > n {
                beyond.push((*demand, demand.count - n, each));
            }
        }
        guarantees.push(guarantee.map(|g| g.unwrap_or(0)));
        guaranteed.push(Claim { held: holds, weight: 1, asks: within });
        rest.push(Claim { held: holds, weight, asks: beyond });
    }
    let first = fill_by(guaranteed, |i, held, weight| Share::of(held, &guarantees[i], weight));
    for (i, demand, n) in &first {
        let each = amounts(demand.app.spec.resources.amounts());
        for (h, e) in rest[*i].held.iter_mut().zip(each) {
            *h = h.saturating_add(e.saturating_mul(*n as u64));
        }
    }
    let second = fill(&capacity, rest);
    own.into_iter()
        .chain(first.into_iter().chain(second).map(|(_, demand, count)| Demand { count, ..demand }))
        .collect()
}

/// How many of `count` instances of `each` fit in `guarantee` on top of `held` (0 when
/// nothing is guaranteed).
fn fitting(held: &[u64; 4], each: &[u64; 4], guarantee: &[Option<u64>; 4], count: usize) -> usize {
    if guarantee.iter().all(Option::is_none) {
        return 0;
    }
    let mut n = count as u64;
    for ((h, e), g) in held.iter().zip(each).zip(guarantee) {
        if let Some(g) = g
            && *e > 0
        {
            n = n.min(g.saturating_sub(*h) / e);
        }
    }
    n as usize
}

/// Tenants' demand cut to what their quotas leave (DESIGN.md §10: the platform places "never
/// beyond a tenant's quota"), so a quota holds however apps were admitted — also where no
/// Baton API server checks it at admission (apps as custom resources of a Kubernetes API
/// server). What its live instances hold (cpus, mem, disk, gpus) and their number, plus what
/// is placed, stays within each limit its Tenant sets; demands are served in queue order. As
/// with Kubernetes' ResourceQuota, what runs is never stopped for a quota, and a rollout's
/// extra instances count: a tenant at its quota rolls out without surge. Each demand cut gets a
/// `QuotaExceeded` warning on its app.
pub fn within_quotas<'d>(snapshot: &Snapshot, queue: Vec<Demand<'d>>) -> (Vec<Demand<'d>>, Vec<Event>) {
    // Nothing to hold: no pass over every instance.
    if snapshot.tenants.iter().all(|t| t.spec.quota.is_empty())
        || !queue.iter().any(|d| matches!(d.scope, Scope::Tenant(_)))
    {
        return (queue, Vec::new());
    }
    let mut held: BTreeMap<&Scope, [u64; 5]> = BTreeMap::new();
    for instance in snapshot.instances.values().chain(&snapshot.foreign).filter(|i| !i.is_terminal()) {
        let entry = held.entry(&instance.record.run.scope).or_insert([0; 5]);
        for (h, a) in entry.iter_mut().zip(amounts(instance.record.run.resources).into_iter().chain([1])) {
            *h = h.saturating_add(a);
        }
    }
    let mut events = Vec::new();
    let mut kept = Vec::with_capacity(queue.len());
    for mut demand in queue {
        let Scope::Tenant(name) = demand.scope else {
            kept.push(demand);
            continue;
        };
        let Some(tenant) = snapshot.tenants.iter().find(|t| t.metadata.name.as_deref() == Some(name.as_str())) else {
            kept.push(demand);
            continue;
        };
        let limits = tenant.spec.quota.limits();
        let holds = held.entry(demand.scope).or_insert([0; 5]);
        let each: Vec<u64> = amounts(demand.app.spec.resources.amounts()).into_iter().chain([1]).collect();
        // How many each limited resource has room for; the least of them binds.
        let rooms: Vec<(usize, u64, u64)> = limits
            .iter()
            .enumerate()
            .filter_map(|(i, limit)| Some((i, (*limit)?)))
            .filter(|(i, _)| each[*i] > 0)
            .map(|(i, limit)| (i, limit, limit.saturating_sub(holds[i]) / each[i]))
            .collect();
        let n = rooms.iter().map(|(_, _, room)| *room).fold(demand.count as u64, u64::min);
        let short: Vec<String> = rooms
            .iter()
            .filter(|(_, _, room)| *room == n)
            .map(|(i, limit, _)| baton_api::tenant::show(*i, *limit))
            .collect();
        for (h, e) in holds.iter_mut().zip(&each) {
            *h = h.saturating_add(e.saturating_mul(n));
        }
        if (n as usize) < demand.count {
            events.push(Event {
                regarding: Regarding::App(super::events::app_ref(demand.app)),
                type_: EventType::Warning,
                reason: "QuotaExceeded",
                message: format!(
                    "instances held back: they would take tenant {name} past its quota ({})",
                    short.join(", ")
                ),
                of_writes: false,
            });
        }
        if n > 0 {
            demand.count = n as usize;
            kept.push(demand);
        }
    }
    (kept, events)
}

/// What each scope's live instances hold now.
pub fn held_by_scope(snapshot: &Snapshot) -> BTreeMap<&Scope, [u64; 4]> {
    let mut held: BTreeMap<&Scope, [u64; 4]> = BTreeMap::new();
    for instance in snapshot.instances.values().chain(&snapshot.foreign).filter(|i| !i.is_terminal()) {
        let entry = held.entry(&instance.record.run.scope).or_insert([0; 4]);
        for (h, a) in entry.iter_mut().zip(amounts(instance.record.run.resources)) {
            *h = h.saturating_add(a);
        }
    }
    held
}

/// Agents reserved for tenants by their guarantees' `agents` (the first tenant by name that
/// selects an agent has it).
#[derive(Debug, Default)]
pub struct Reserved(BTreeMap<String, String>);

impl Reserved {
    pub fn of(snapshot: &Snapshot) -> Self {
        let mut reserved = BTreeMap::new();
        if !snapshot.scope.places() {
            return Self(reserved);
        }
        let mut tenants: Vec<_> = snapshot.tenants.iter().filter(|t| !t.spec.guarantee.agents.is_empty()).collect();
        tenants.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for tenant in tenants {
            let name = tenant.metadata.name.clone().unwrap_or_default();
            for agent in snapshot.agents.values().filter(|a| tenant.spec.guarantee.reserves(&a.attributes)) {
                reserved.entry(agent.name.clone()).or_insert_with(|| name.clone());
            }
        }
        Self(reserved)
    }

    /// The tenant `agent` is reserved for.
    pub fn tenant_of(&self, agent: &str) -> Option<&str> {
        self.0.get(agent).map(String::as_str)
    }
}

/// Whether `app` is a tenant's controller the platform runs.
fn is_tenant_controller(app: &baton_api::App) -> bool {
    app.metadata.namespace.as_deref() == Some(baton_api::tenant::SYSTEM_NAMESPACE)
        && app.metadata.labels.as_ref().is_some_and(|l| l.contains_key(baton_api::tenant::CONTROLLER_LABEL))
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use num_bigint::BigInt;
    use num_rational::BigRational;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The reference: `max_r held_r / cap_r`, divided by the weight, as a big-integer fraction
    /// compared by cross-multiplication (`None`: infinite, weight 0). No normalization: the
    /// comparison alone is what is checked, and it needs none.
    fn reference(held: &[u64; 4], capacity: &[u64; 4], weight: u64) -> Option<(BigInt, BigInt)> {
        if weight == 0 {
            return None;
        }
        let big = |n: u64| BigInt::from(n);
        let mut dominant = (big(0), big(1));
        for (h, c) in held.iter().zip(capacity).filter(|(_, c)| **c > 0) {
            if big(*h) * &dominant.1 > &dominant.0 * big(*c) {
                dominant = (big(*h), big(*c));
            }
        }
        Some((dominant.0, dominant.1 * big(weight)))
    }

    fn reference_cmp(a: &Option<(BigInt, BigInt)>, b: &Option<(BigInt, BigInt)>) -> Ordering {
        match (a, b) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some((n1, d1)), Some((n2, d2))) => (n1 * d2).cmp(&(n2 * d1)),
        }
    }

    /// The same comparison through `num-rational`, for a sample: the two references agree.
    fn rational(reference: &Option<(BigInt, BigInt)>) -> Option<BigRational> {
        reference.as_ref().map(|(n, d)| BigRational::new(n.clone(), d.clone()))
    }

    /// Quantities over the whole range that matters: small, near each other, and up to 2^50;
    /// weights 0, 1, 10^6 and between.
    fn quantity(rng: &mut rand::rngs::StdRng) -> u64 {
        match rng.random_range(0..4) {
            0 => rng.random_range(0..10),
            1 => rng.random_range(0..1_000_000),
            2 => (1u64 << 50) - rng.random_range(0..3),
            _ => rng.random_range(0..=(1u64 << 50)),
        }
    }

    fn weight(rng: &mut rand::rngs::StdRng) -> u64 {
        match rng.random_range(0..5) {
            0 => 0,
            1 => 1,
            2 => 1_000_000,
            _ => rng.random_range(0..=1_000_000),
        }
    }

    #[test]
    fn fractions_compare_exactly() {
        assert_eq!(fraction_cmp(1, 3, 2, 6), Ordering::Equal);
        assert_eq!(fraction_cmp(1, 3, 1, 2), Ordering::Less);
        assert_eq!(fraction_cmp(u128::MAX, u128::MAX - 1, u128::MAX - 1, u128::MAX - 2), Ordering::Less);
        assert_eq!(fraction_cmp(5, 0, 1, 1), Ordering::Greater, "x/0 is infinite");
        assert_eq!(fraction_cmp(0, 7, 0, 9), Ordering::Equal);
    }

    /// A million random states: the weighted dominant share compares as the big-rational
    /// reference says, every time.
    #[test]
    fn shares_agree_with_a_big_rational_reference_over_a_million_states() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ba7e);
        let mut disagreements = 0;
        for _ in 0..1_000_000 {
            let capacity = [quantity(&mut rng), quantity(&mut rng), quantity(&mut rng), quantity(&mut rng)];
            let a = [quantity(&mut rng), quantity(&mut rng), quantity(&mut rng), quantity(&mut rng)];
            let b = [quantity(&mut rng), quantity(&mut rng), quantity(&mut rng), quantity(&mut rng)];
            let (wa, wb) = (weight(&mut rng), weight(&mut rng));
            let ours = Share::of(&a, &capacity, wa).cmp(&Share::of(&b, &capacity, wb));
            let (ra, rb) = (reference(&a, &capacity, wa), reference(&b, &capacity, wb));
            let theirs = reference_cmp(&ra, &rb);
            if ours != theirs {
                disagreements += 1;
            }
            if rng.random_range(0..1000) == 0 {
                let by_rationals = match (rational(&ra), rational(&rb)) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Greater,
                    (Some(_), None) => Ordering::Less,
                    (Some(x), Some(y)) => x.cmp(&y),
                };
                assert_eq!(by_rationals, theirs);
            }
        }
        assert_eq!(disagreements, 0);
    }

    /// The filling against a reference filling in big rationals, on random small clusters:
    /// the same order; and granting instances in that order while they fit never exceeds the
    /// capacity (Σ allocations ≤ capacity, exactly).
    #[test]
    fn filling_agrees_with_the_reference_and_never_exceeds_capacity() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let capacity: [u64; 4] =
                [rng.random_range(1..64_000), rng.random_range(1..256_000), 0, rng.random_range(0..8)];
            let claims: Vec<Claim<usize>> = (0..rng.random_range(1..6))
                .map(|_| Claim {
                    held: [rng.random_range(0..32_000), rng.random_range(0..128_000), 0, rng.random_range(0..4)],
                    weight: weight(&mut rng),
                    asks: (0..rng.random_range(1..4))
                        .map(|k| {
                            let each =
                                [rng.random_range(1..4_000), rng.random_range(1..16_000), 0, rng.random_range(0..2)];
                            (k, rng.random_range(0..20), each)
                        })
                        .collect(),
                })
                .collect();
            let ours: Vec<(usize, usize)> = fill(&capacity, claims.clone())
                .into_iter()
                .flat_map(|(c, item, n)| std::iter::repeat_n((c, item), n))
                .collect();
            // The reference: pick the smallest share (then the first claimant) one instance at a time.
            let mut claims_ref = claims.clone();
            let mut theirs: Vec<(usize, usize)> = Vec::new();
            loop {
                let best = (0..claims_ref.len()).filter(|i| claims_ref[*i].asks.iter().any(|(_, n, _)| *n > 0)).min_by(
                    |x, y| {
                        let (cx, cy) = (&claims_ref[*x], &claims_ref[*y]);
                        reference_cmp(
                            &reference(&cx.held, &capacity, cx.weight),
                            &reference(&cy.held, &capacity, cy.weight),
                        )
                        .then(x.cmp(y))
                    },
                );
                let Some(i) = best else { break };
                let claim = &mut claims_ref[i];
                let ask = claim.asks.iter_mut().find(|(_, n, _)| *n > 0).expect("an ask");
                ask.1 -= 1;
                for (h, e) in claim.held.iter_mut().zip(ask.2) {
                    *h += e;
                }
                theirs.push((i, ask.0));
            }
            assert_eq!(ours, theirs);
            // Granting in that order while each fits.
            let mut free = capacity;
            let each_of = |c: usize, item: usize| claims[c].asks.iter().find(|(k, _, _)| *k == item).unwrap().2;
            let mut granted = [0u64; 4];
            for (c, item) in &ours {
                let each = each_of(*c, *item);
                if each.iter().zip(&free).all(|(e, f)| e <= f) {
                    for r in 0..4 {
                        free[r] -= each[r];
                        granted[r] += each[r];
                    }
                }
            }
            assert!(granted.iter().zip(&capacity).all(|(g, c)| g <= c));
        }
    }

    #[test]
    fn the_tenant_with_the_smaller_weighted_share_goes_first() {
        let capacity = [10_000, 40_960, 0, 0];
        // a holds 40% of the cpus, b 10% of the memory with weight 1; a has weight 4: 10%.
        let claims = vec![
            Claim { held: [4_000, 0, 0, 0], weight: 4, asks: vec![("a", 2, [1_000, 0, 0, 0])] },
            Claim { held: [0, 4_096, 0, 0], weight: 1, asks: vec![("b", 2, [0, 4_096, 0, 0])] },
        ];
        let order: Vec<(&str, usize)> = fill(&capacity, claims).into_iter().map(|(_, item, n)| (item, n)).collect();
        // Equal at 10%: a first (the first claimant), then b (10% < a's 12.5%), then b again
        // (20% > 12.5%? no: a's 12.5% < b's 20%): a, b, a, b.
        assert_eq!(order, [("a", 1), ("b", 1), ("a", 1), ("b", 1)]);
    }
}
