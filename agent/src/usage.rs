//! Measuring what one instance uses: cpu and memory from its cgroup, disk from its sandbox,
//! and whether the sandbox has outgrown the instance's `disk` (Mesos' posix/disk isolator:
//! a periodic `du`, and the instance stopped when over).

use std::path::PathBuf;

use baton_api::records::Usage;

use crate::cgroups::Cgroup;

/// Measures one instance, sample after sample (the cpu rate is between two samples).
pub struct Meter {
    cgroup: Option<Cgroup>,
    sandbox: PathBuf,
    /// The instance's `disk`, MiB; 0: not measured nor enforced.
    disk_mib: u64,
    /// The last cpu counter and when it was read.
    last_cpu: Option<(u64, std::time::Instant)>,
    /// The last usage measured.
    last: Option<Usage>,
}

/// A sandbox over its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverDisk {
    /// Bytes the sandbox takes.
    pub used: u64,
    /// Bytes the instance may take.
    pub limit: u64,
}

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measured {
    pub usage: Option<Usage>,
    pub over_disk: Option<OverDisk>,
}

impl Meter {
    pub fn new(cgroup: Option<Cgroup>, sandbox: PathBuf, disk_mib: u64) -> Self {
        Self { cgroup, sandbox, disk_mib, last_cpu: None, last: None }
    }

    /// Cpu and memory now, from the cgroup (`None` without one), with the sandbox's size
    /// last measured.
    pub fn measure_cpu_and_memory(&mut self) -> Option<Usage> {
        let counters = self.cgroup.as_ref()?.counters();
        let now = std::time::Instant::now();
        let millicpus = match (counters.cpu_nanos, self.last_cpu) {
            (Some(cpu), Some((before, at))) => {
                let wall = now.duration_since(at).as_nanos();
                (wall > 0).then(|| (u128::from(cpu.saturating_sub(before)) * 1000 / wall) as u64)
            }
            _ => self.last.and_then(|u| u.millicpus),
        };
        if let Some(cpu) = counters.cpu_nanos {
            self.last_cpu = Some((cpu, now));
        }
        let usage = Usage {
            cpu_millis: counters.cpu_nanos.map(|n| n / 1_000_000),
            millicpus,
            memory_bytes: counters.memory_bytes,
            disk_bytes: self.last.and_then(|u| u.disk_bytes),
        };
        self.last = Some(usage);
        Some(usage)
    }

    /// Measures cpu, memory and (for an instance with `disk`) the sandbox, on a blocking
    /// thread; says whether the sandbox is over the instance's disk.
    pub async fn measure(&mut self) -> Measured {
        let mut usage = self.measure_cpu_and_memory();
        let mut over_disk = None;
        if self.disk_mib > 0 {
            let sandbox = self.sandbox.clone();
            match tokio::task::spawn_blocking(move || crate::fetch::disk_usage(&sandbox)).await {
                Ok(Ok(used)) => {
                    let limit = self.disk_mib << 20;
                    if used > limit {
                        over_disk = Some(OverDisk { used, limit });
                    }
                    let with_disk = Usage { disk_bytes: Some(used), ..usage.unwrap_or_default() };
                    self.last = Some(with_disk);
                    usage = Some(with_disk);
                }
                Ok(Err(e)) => {
                    tracing::warn!(sandbox = %self.sandbox.display(), error = %e, "could not measure the sandbox")
                }
                Err(e) => tracing::warn!(error = %e, "measuring the sandbox stopped"),
            }
        }
        Measured { usage, over_disk }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sandbox_over_its_disk_is_reported_and_under_it_is_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data"), vec![1u8; 3 << 20]).unwrap();
        let mut within = Meter::new(None, dir.path().to_path_buf(), 4);
        let measured = within.measure().await;
        assert_eq!(measured.over_disk, None);
        let used = measured.usage.and_then(|u| u.disk_bytes).expect("the sandbox is measured");
        assert!(used >= 3 << 20, "{used}");
        let mut over = Meter::new(None, dir.path().to_path_buf(), 2);
        let measured = over.measure().await;
        assert_eq!(measured.over_disk.map(|o| o.limit), Some(2 << 20));
        // Without disk nor cgroup nothing is measured.
        assert_eq!(Meter::new(None, dir.path().to_path_buf(), 0).measure().await, Measured::default());
    }
}
