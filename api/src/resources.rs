//! Resources: what an app asks for per instance, and the integer amounts the scheduler
//! adds up.
//!
//! Users write resources the way Marathon did — `cpus: 0.25`, `mem: 128` (MiB), `disk: 0`
//! (MiB), `gpus: 1`. Placement never adds floats: every request is turned once into integer
//! [`ResourceAmounts`] (thousandths of a cpu, whole MiB, rounded up), so sums over
//! thousands of instances carry no drift and `fits` is exact.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What one instance of an app needs, as the user writes it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU shares, in cpus (0.5 = half a core). Must be greater than 0.
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Memory in MiB. Must be greater than 0.
    #[serde(default = "default_mem")]
    pub mem: f64,
    /// Scratch disk in MiB (0 = none).
    #[serde(default)]
    pub disk: f64,
    /// Whole GPUs (0 = none).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0))]
    pub gpus: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn default_cpus() -> f64 {
    1.0
}

fn default_mem() -> f64 {
    128.0
}

impl Default for Resources {
    /// Marathon's defaults: 1 cpu, 128 MiB, no disk.
    fn default() -> Self {
        Self { cpus: default_cpus(), mem: default_mem(), disk: 0.0, gpus: 0 }
    }
}

impl Resources {
    /// The integer amounts the scheduler uses: cpus in thousandths and MiB rounded up, so an
    /// instance is never placed with less than it asked for.
    pub fn amounts(&self) -> ResourceAmounts {
        ResourceAmounts {
            millicpus: round_up(self.cpus * 1000.0),
            mem_mib: round_up(self.mem),
            disk_mib: round_up(self.disk),
            gpus: self.gpus.max(0) as u64,
        }
    }
}

/// Rounds a non-negative request up to a whole unit. Validation has already refused
/// negative, NaN and infinite values; clamping keeps this total anyway.
fn round_up(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        // Requests are far below 2^53, where f64 holds integers exactly.
        value.ceil() as u64
    } else {
        0
    }
}

/// Resources as exact integers: an agent's capacity, what is allocated on it, or what one
/// instance needs.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceAmounts {
    /// Thousandths of a cpu.
    pub millicpus: u64,
    /// MiB of memory.
    pub mem_mib: u64,
    /// MiB of disk.
    pub disk_mib: u64,
    /// Whole GPUs.
    #[serde(default)]
    pub gpus: u64,
}

impl ResourceAmounts {
    /// Componentwise sum, saturating (a sum that overflows u64 cannot fit anywhere anyway).
    pub fn plus(self, other: Self) -> Self {
        Self {
            millicpus: self.millicpus.saturating_add(other.millicpus),
            mem_mib: self.mem_mib.saturating_add(other.mem_mib),
            disk_mib: self.disk_mib.saturating_add(other.disk_mib),
            gpus: self.gpus.saturating_add(other.gpus),
        }
    }

    /// Componentwise difference, floored at zero.
    pub fn minus(self, other: Self) -> Self {
        Self {
            millicpus: self.millicpus.saturating_sub(other.millicpus),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
            disk_mib: self.disk_mib.saturating_sub(other.disk_mib),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }

    /// `n` times these amounts, saturating.
    pub fn times(self, n: u64) -> Self {
        Self {
            millicpus: self.millicpus.saturating_mul(n),
            mem_mib: self.mem_mib.saturating_mul(n),
            disk_mib: self.disk_mib.saturating_mul(n),
            gpus: self.gpus.saturating_mul(n),
        }
    }

    /// Splits these amounts into `parts` equal shares (rounded down), e.g. a machine's
    /// resources among the agents `baton dev` runs on it.
    pub fn divided_by(self, parts: u64) -> Self {
        let parts = parts.max(1);
        Self {
            millicpus: self.millicpus / parts,
            mem_mib: self.mem_mib / parts,
            disk_mib: self.disk_mib / parts,
            gpus: self.gpus / parts,
        }
    }

    /// The first resource of `request` that does not fit into `self` (the free amounts),
    /// or `None` when all of it fits.
    pub fn first_shortfall(self, request: Self) -> Option<ResourceKind> {
        if request.millicpus > self.millicpus {
            Some(ResourceKind::Cpus)
        } else if request.mem_mib > self.mem_mib {
            Some(ResourceKind::Mem)
        } else if request.disk_mib > self.disk_mib {
            Some(ResourceKind::Disk)
        } else if request.gpus > self.gpus {
            Some(ResourceKind::Gpus)
        } else {
            None
        }
    }

    /// Renders as the user would write it: `cpus=0.25,mem=128,disk=0` (and `,gpus=N` when
    /// there are any).
    pub fn display(self) -> String {
        let gpus = if self.gpus > 0 { format!(",gpus={}", self.gpus) } else { String::new() };
        format!("cpus={},mem={},disk={}{gpus}", format_millis(self.millicpus), self.mem_mib, self.disk_mib)
    }
}

/// Formats thousandths without trailing zeros: 250 → "0.25", 2000 → "2".
fn format_millis(millis: u64) -> String {
    let whole = millis / 1000;
    let frac = millis % 1000;
    if frac == 0 {
        whole.to_string()
    } else {
        let digits = format!("{frac:03}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// One kind of resource, for reasons such as "insufficient mem".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Cpus,
    Mem,
    Disk,
    Gpus,
}

impl ResourceKind {
    pub fn name(self) -> &'static str {
        match self {
            ResourceKind::Cpus => "cpus",
            ResourceKind::Mem => "mem",
            ResourceKind::Disk => "disk",
            ResourceKind::Gpus => "gpus",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_up_to_whole_units() {
        let r = Resources { cpus: 0.0005, mem: 127.2, disk: 0.0, gpus: 0 };
        assert_eq!(r.amounts(), ResourceAmounts { millicpus: 1, mem_mib: 128, disk_mib: 0, gpus: 0 });
        let r = Resources { cpus: 0.25, mem: 64.0, disk: 10.0, gpus: 2 };
        assert_eq!(r.amounts(), ResourceAmounts { millicpus: 250, mem_mib: 64, disk_mib: 10, gpus: 2 });
    }

    #[test]
    fn shortfall_names_the_first_missing_resource() {
        let free = ResourceAmounts { millicpus: 500, mem_mib: 100, disk_mib: 0, gpus: 1 };
        let ask = |millicpus, mem_mib, disk_mib| ResourceAmounts { millicpus, mem_mib, disk_mib, gpus: 0 };
        assert_eq!(free.first_shortfall(ask(500, 100, 0)), None);
        assert_eq!(free.first_shortfall(ask(501, 1, 0)), Some(ResourceKind::Cpus));
        assert_eq!(free.first_shortfall(ask(100, 101, 0)), Some(ResourceKind::Mem));
        assert_eq!(free.first_shortfall(ask(100, 100, 1)), Some(ResourceKind::Disk));
        assert_eq!(free.first_shortfall(ResourceAmounts { gpus: 2, ..ask(1, 1, 0) }), Some(ResourceKind::Gpus));
    }

    #[test]
    fn display_reads_like_the_cli_flag() {
        let a = ResourceAmounts { millicpus: 2250, mem_mib: 4096, disk_mib: 0, gpus: 0 };
        assert_eq!(a.display(), "cpus=2.25,mem=4096,disk=0");
        assert_eq!(ResourceAmounts { millicpus: 3000, gpus: 1, ..a }.display(), "cpus=3,mem=4096,disk=0,gpus=1");
    }
}
