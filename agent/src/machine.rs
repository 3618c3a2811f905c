//! What this machine has to give: cpus, memory and disk.

use std::path::Path;

use baton_api::ResourceAmounts;

/// The machine's cpus (as the scheduler of this process sees them), total memory, and the
/// disk space available under `work_dir`.
pub fn resources(work_dir: &Path) -> ResourceAmounts {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mem_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total_mib(&m)).unwrap_or(1024);
    let disk_mib = nix::sys::statvfs::statvfs(work_dir)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()) / (1024 * 1024))
        .unwrap_or(0);
    ResourceAmounts { millicpus: cpus * 1000, mem_mib, disk_mib }
}

fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_meminfo_and_the_machine() {
        assert_eq!(super::mem_total_mib("MemTotal:       24576000 kB\nMemFree: 1 kB\n"), Some(24000));
        let r = super::resources(std::path::Path::new("/"));
        assert!(r.millicpus >= 1000 && r.mem_mib > 0, "{r:?}");
    }
}
