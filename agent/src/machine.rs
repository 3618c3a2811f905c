//! What this machine has to give: cpus, memory and disk.

use std::path::Path;

use baton_api::ResourceAmounts;

/// The machine's cpus (as the scheduler of this process sees them), total memory, the disk
/// space available under `work_dir`, and its GPUs (NVIDIA device nodes `/dev/nvidia<N>`).
pub fn resources(work_dir: &Path) -> ResourceAmounts {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mem_mib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| mem_total_mib(&m)).unwrap_or(1024);
    let disk_mib = nix::sys::statvfs::statvfs(work_dir)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()) / (1024 * 1024))
        .unwrap_or(0);
    ResourceAmounts { millicpus: cpus * 1000, mem_mib, disk_mib, gpus: gpu_devices(std::path::Path::new("/dev")) }
}

/// `nvidia0`, `nvidia1`… in `dev` (not `nvidiactl` or `nvidia-uvm`).
fn gpu_devices(dev: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dev) else { return 0 };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| {
            name.strip_prefix("nvidia").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count() as u64
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

    #[test]
    fn gpus_are_the_numbered_nvidia_devices() {
        let dev = tempfile::tempdir().unwrap();
        for name in ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null"] {
            std::fs::write(dev.path().join(name), b"").unwrap();
        }
        assert_eq!(super::gpu_devices(dev.path()), 2);
    }
}
