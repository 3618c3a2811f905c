//! The controller: compares every App's spec with the observed state of its instances and
//! acts on the difference, at every tick, from the full view.
//!
//! - [`snapshot`]: the immutable view one tick plans from.
//! - [`plan`]: the pure planner (`plan(&Snapshot, &PlanContext) -> Plan`); no I/O, no clock.
//! - [`schedule`]: placement, used by the planner; pure as well.
//! - [`runtime`]: the impure rest — caches fed by watches, leader election, the executor
//!   that applies a plan in fenced, batched store transactions, and the loop tying them up.
#![deny(warnings, rust_2018_idioms)]
#![forbid(unsafe_code)]

mod parallel;
pub mod plan;
pub mod runtime;
pub mod schedule;
pub mod snapshot;
#[cfg(test)]
mod testing;
