//! Each instance in its own cgroup, under the agent's: its cpu (a CFS quota from `cpus`, or
//! only a relative weight), its memory (a limit from `mem`; the kernel's OOM kills counted)
//! and its number of processes limited; what it uses read back for its status.
//!
//! Both hierarchies are handled: cgroup v2 (one tree, `<root>/cgroup.controllers`) and v1
//! (a tree per controller, `<root>/cpu`, `<root>/memory`…, as on hosts where only v1
//! controllers are mounted). An instance's cgroup is `<parent>/<agent>/<instance id>` in each
//! tree: found again from the instance id alone, so an agent restarted while its instances
//! run adopts them with their cgroups.
//!
//! Every function here takes the hierarchy's root as a path, so the layout is tested against
//! a temporary directory tree; only [`Hierarchy::detect`] looks at what is mounted.

use std::io;
use std::path::{Path, PathBuf};

use baton_api::ResourceAmounts;

/// The CFS period: quotas are per 100 ms, as Kubernetes and Mesos set them.
pub const CPU_PERIOD_MICROS: u64 = 100_000;
/// The least cpu an instance is limited to (1% of a cpu, as Mesos' `MIN_CPUS`): a smaller
/// quota starves even `sleep`.
pub const MIN_MILLICPUS: u64 = 10;
/// The least memory an instance is limited to (as Mesos' `MIN_MEMORY`): a shell and a
/// small program need this much, whatever the app asked for.
pub const MIN_MEMORY_MIB: u64 = 32;

/// Which cgroup hierarchy to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// v2 where mounted, else v1; none when neither can be written (the agent is not root).
    Auto,
    /// No cgroups: resources are only bookkeeping for placement.
    Off,
    V1,
    V2,
}

/// How `cpus` limits an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuLimit {
    /// A hard CFS quota: at most `cpus` cores' time in each period, even on an idle machine.
    Quota,
    /// Only a weight relative to the others: idle cores may be used, a busy machine is
    /// shared in proportion to `cpus`.
    Shares,
}

/// The agent's cgroup settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// Where the hierarchies are mounted (`/sys/fs/cgroup`).
    pub root: PathBuf,
    /// Under the root, the cgroup that holds every agent's (`baton`).
    pub parent: PathBuf,
    pub cpu: CpuLimit,
    /// The most processes (and threads) in one instance; 0: no limit.
    pub pids_max: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::Auto,
            root: PathBuf::from("/sys/fs/cgroup"),
            parent: PathBuf::from("baton"),
            cpu: CpuLimit::Quota,
            pids_max: 4096,
        }
    }
}

/// The agent's cgroup that holds instances' log writers (not an instance id: those are DNS
/// labels, without `_`).
const LOGGERS: &str = "_loggers";

/// The cgroup v1 controllers used, each in its own tree (or comounted).
pub const V1_CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];
/// The cgroup v2 controllers used.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// The one tree's directory for this agent.
    V2 { agent: PathBuf },
    /// For each v1 controller found, this agent's directory in its tree.
    V1 { agents: Vec<(&'static str, PathBuf)> },
}

/// Where this agent's instances' cgroups go, and how they are limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    layout: Layout,
    cpu: CpuLimit,
    pids_max: u64,
}

impl Hierarchy {
    /// The hierarchy `settings` ask for, with the agent's cgroup created in it. `Ok(None)`:
    /// no cgroups (asked for none, or `Auto` found none it could write, which is logged).
    pub fn detect(settings: &Settings, agent: &str) -> Result<Option<Self>, String> {
        let root = &settings.root;
        let v2 = root.join("cgroup.controllers").is_file();
        let v1 = V1_CONTROLLERS.iter().any(|c| root.join(c).join("cgroup.procs").is_file());
        let layout = match settings.mode {
            Mode::Off => return Ok(None),
            Mode::V2 if !v2 => {
                return Err(format!("--cgroups v2: {} is not a cgroup v2 hierarchy", root.display()));
            }
            Mode::V1 if !v1 => {
                return Err(format!("--cgroups v1: no cgroup v1 controller is mounted under {}", root.display()));
            }
            Mode::Auto if !v1 && !v2 => {
                tracing::warn!(root = %root.display(), "no cgroup hierarchy found: instances' resources are not enforced");
                return Ok(None);
            }
            Mode::V2 | Mode::Auto if v2 => Layout::V2 { agent: root.join(&settings.parent).join(agent) },
            _ => Layout::V1 {
                agents: V1_CONTROLLERS
                    .iter()
                    .filter(|c| root.join(c).join("cgroup.procs").is_file())
                    .map(|c| (*c, root.join(c).join(&settings.parent).join(agent)))
                    .collect(),
            },
        };
        let hierarchy = Self { layout, cpu: settings.cpu, pids_max: settings.pids_max };
        match hierarchy.prepare(root) {
            Ok(()) => Ok(Some(hierarchy)),
            Err(e) if settings.mode == Mode::Auto => {
                tracing::warn!(root = %root.display(), error = %e, "cannot create cgroups: instances' resources are not enforced (run the agent as root, or --cgroups off)");
                Ok(None)
            }
            Err(e) => Err(format!("creating the agent's cgroup under {}: {e}", root.display())),
        }
    }

    /// Creates the agent's cgroups; on v2, enables the controllers down to them.
    fn prepare(&self, root: &Path) -> io::Result<()> {
        match &self.layout {
            Layout::V2 { agent } => {
                std::fs::create_dir_all(agent)?;
                let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                let wanted: Vec<&str> =
                    V2_CONTROLLERS.iter().copied().filter(|c| available.split_whitespace().any(|a| a == *c)).collect();
                // Each cgroup from the root down to the agent's hands the controllers on to
                // its children.
                let below = agent.strip_prefix(root).map_err(io::Error::other)?;
                let mut dir = root.to_path_buf();
                for part in std::iter::once(None).chain(below.components().map(Some)) {
                    if let Some(part) = part {
                        dir.push(part);
                    }
                    for controller in &wanted {
                        // One the kernel will not hand on (e.g. cpu with realtime threads
                        // about) goes unenforced; the others still apply.
                        if let Err(e) = write(&dir.join("cgroup.subtree_control"), &format!("+{controller}")) {
                            tracing::warn!(controller, error = %e, "a cgroup controller is not available to instances");
                        }
                    }
                }
                Ok(())
            }
            Layout::V1 { agents } => agents.iter().try_for_each(|(_, dir)| std::fs::create_dir_all(dir)),
        }?;
        self.loggers().dirs.iter().try_for_each(|(_, dir)| std::fs::create_dir_all(dir))
    }

    /// The cgroup of instances' log writers, without limits: outside the agent's own cgroup
    /// (a container's, on Kubernetes), so they outlive the agent with the instances they
    /// write for.
    pub fn loggers(&self) -> Cgroup {
        self.cgroup(LOGGERS)
    }

    /// Whether this is cgroup v2.
    pub fn is_v2(&self) -> bool {
        matches!(self.layout, Layout::V2 { .. })
    }

    /// The instance's cgroup, whether or not it exists.
    pub fn cgroup(&self, id: &str) -> Cgroup {
        match &self.layout {
            Layout::V2 { agent } => Cgroup { v2: true, dirs: vec![("", agent.join(id))] },
            Layout::V1 { agents } => {
                let mut dirs: Vec<(&'static str, PathBuf)> = Vec::new();
                for (controller, agent) in agents {
                    let dir = agent.join(id);
                    // cpu and cpuacct are often one tree under two names: one directory.
                    if !dirs.iter().any(|(_, d)| same_dir(d, &dir)) {
                        dirs.push((controller, dir));
                    }
                }
                Cgroup { v2: false, dirs }
            }
        }
    }

    /// Creates the instance's cgroup with its limits from `resources`.
    pub fn create(&self, id: &str, resources: &ResourceAmounts) -> io::Result<Cgroup> {
        let cgroup = self.cgroup(id);
        for (_, dir) in &cgroup.dirs {
            std::fs::create_dir_all(dir)?;
        }
        let millicpus = resources.millicpus.max(MIN_MILLICPUS);
        let memory = resources.mem_mib.max(MIN_MEMORY_MIB) << 20;
        let quota = (self.cpu == CpuLimit::Quota).then(|| millicpus * CPU_PERIOD_MICROS / 1000);
        if cgroup.v2 {
            let dir = &cgroup.dirs[0].1;
            write_if_present(dir, "cpu.weight", &v2_weight(millicpus).to_string())?;
            let max = quota.map_or_else(|| "max".to_string(), |q| q.to_string());
            write_if_present(dir, "cpu.max", &format!("{max} {CPU_PERIOD_MICROS}"))?;
            write_if_present(dir, "memory.max", &memory.to_string())?;
            // No swap: the limit is the limit.
            let _ = write_if_present(dir, "memory.swap.max", "0");
            if self.pids_max > 0 {
                write_if_present(dir, "pids.max", &self.pids_max.to_string())?;
            }
        } else {
            if let Some(dir) = cgroup.dir("cpu") {
                write(&dir.join("cpu.shares"), &v1_shares(millicpus).to_string())?;
                write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_MICROS.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.map_or(-1, |q| q as i64).to_string())?;
            }
            if let Some(dir) = cgroup.dir("memory") {
                write(&dir.join("memory.limit_in_bytes"), &memory.to_string())?;
                // Memory and swap together, where the kernel accounts swap: no way around the
                // limit through swap.
                let _ = write_if_present(dir, "memory.memsw.limit_in_bytes", &memory.to_string());
            }
            if let Some(dir) = cgroup.dir("pids")
                && self.pids_max > 0
            {
                write(&dir.join("pids.max"), &self.pids_max.to_string())?;
            }
        }
        Ok(cgroup)
    }
}

/// Whether two paths are the same directory (through symlinks), or the same path.
fn same_dir(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    let parent = |p: &Path| p.parent().and_then(|p| std::fs::canonicalize(p).ok());
    match (parent(a), parent(b)) {
        (Some(pa), Some(pb)) => pa == pb && a.file_name() == b.file_name(),
        _ => false,
    }
}

/// cgroup v1 `cpu.shares` for `millicpus`: 1024 per cpu, at least 2 (the kernel's least).
pub fn v1_shares(millicpus: u64) -> u64 {
    (millicpus * 1024 / 1000).max(2)
}

/// cgroup v2 `cpu.weight` (1–10000) for `millicpus`, as Kubernetes maps shares to weights.
pub fn v2_weight(millicpus: u64) -> u64 {
    let shares = v1_shares(millicpus).min(262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {value:?} to {}: {e}", path.display())))
}

/// Writes a control file the kernel may not have (a controller not enabled): missing is fine
/// on a real hierarchy, where every file of an enabled controller exists; in a plain
/// directory (tests) it is created.
fn write_if_present(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    match std::fs::write(&path, value) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("writing {value:?} to {}: {e}", path.display()))),
    }
}

/// One instance's cgroup: one directory (v2) or one per controller tree (v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    v2: bool,
    dirs: Vec<(&'static str, PathBuf)>,
}

/// What a cgroup's counters say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// CPU time used, nanoseconds.
    pub cpu_nanos: Option<u64>,
    /// Memory in use less the inactive file cache, bytes (Kubernetes' working set).
    pub memory_bytes: Option<u64>,
    /// How many processes the kernel killed for the memory limit.
    pub oom_kills: u64,
}

impl Cgroup {
    /// The directory of a v1 controller's tree (v2: the one directory).
    fn dir(&self, controller: &str) -> Option<&Path> {
        if self.v2 {
            return self.dirs.first().map(|(_, d)| d.as_path());
        }
        let wanted = self.dirs.iter().find(|(c, _)| *c == controller).map(|(_, d)| d.as_path());
        // A comounted controller (cpu,cpuacct) lives in the first's directory.
        wanted.or_else(|| {
            self.dirs.iter().map(|(_, d)| d.as_path()).find(|d| d.join(format!("{controller}.stat")).exists())
        })
    }

    /// Whether its directories exist (an adopted instance's were made by an earlier run).
    pub fn exists(&self) -> bool {
        !self.dirs.is_empty() && self.dirs.iter().all(|(_, d)| d.is_dir())
    }

    /// The `cgroup.procs` files a process writes its pid to, to enter this cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.join("cgroup.procs")).collect()
    }

    /// Moves `pid` into this cgroup (every tree).
    pub fn enter(&self, pid: u32) -> io::Result<()> {
        self.procs_files().iter().try_for_each(|file| write(file, &pid.to_string()))
    }

    /// The processes in it.
    pub fn pids(&self) -> Vec<u32> {
        let Some((_, dir)) = self.dirs.first() else { return Vec::new() };
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Reads its counters; what cannot be read is `None` (0 for OOM kills).
    pub fn counters(&self) -> Counters {
        let read = |controller: &str, file: &str| -> Option<String> {
            std::fs::read_to_string(self.dir(controller)?.join(file)).ok()
        };
        // The same counters under each hierarchy's names.
        let (cpu_nanos, usage, inactive, oom) = if self.v2 {
            let cpu = read("cpu", "cpu.stat").and_then(|s| field(&s, "usage_usec")).map(|us| us * 1000);
            (cpu, "memory.current", "inactive_file", "memory.events")
        } else {
            let cpu = read("cpuacct", "cpuacct.usage").and_then(|s| s.trim().parse().ok());
            (cpu, "memory.usage_in_bytes", "total_inactive_file", "memory.oom_control")
        };
        let inactive = read("memory", "memory.stat").and_then(|s| field(&s, inactive)).unwrap_or(0);
        let memory_bytes =
            read("memory", usage).and_then(|s| s.trim().parse::<u64>().ok()).map(|m| m.saturating_sub(inactive));
        let oom_kills = read("memory", oom).and_then(|s| field(&s, "oom_kill")).unwrap_or(0);
        Counters { cpu_nanos, memory_bytes, oom_kills }
    }

    /// The memory limit set, bytes.
    pub fn memory_limit(&self) -> Option<u64> {
        let file = if self.v2 { "memory.max" } else { "memory.limit_in_bytes" };
        std::fs::read_to_string(self.dir("memory")?.join(file)).ok()?.trim().parse().ok()
    }

    /// SIGKILLs what is left in it, then removes it. Everything a process of the instance
    /// started is in it, even what left its process group. Returns an error naming a
    /// directory that could not be removed (processes the kernel has not reaped yet).
    pub async fn remove(&self) -> io::Result<()> {
        for attempt in 0..50 {
            for pid in self.pids() {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
            let mut busy = None;
            for (_, dir) in &self.dirs {
                match std::fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => busy = Some(io::Error::new(e.kind(), format!("removing {}: {e}", dir.display()))),
                }
            }
            match busy {
                None => return Ok(()),
                Some(e) if attempt == 49 => return Err(e),
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        Ok(())
    }
}

/// The value of `name` in a flat-keyed file (`name value` per line).
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Enters the cgroups whose `cgroup.procs` files are given, drops to `uid`:`gid` (with no
/// supplementary groups) if given, and executes `program` — what `baton enter-cgroup` does
/// between the agent and an instance's command, so that the command and everything it starts
/// are in the instance's cgroup from their first instruction. Returns only on failure.
pub fn enter_and_exec(procs: &[PathBuf], user: Option<(u32, u32)>, program: &str, args: &[String]) -> io::Error {
    use std::os::unix::process::CommandExt;
    let me = std::process::id().to_string();
    for file in procs {
        if let Err(e) = write(file, &me) {
            return e;
        }
    }
    if let Some((uid, gid)) = user {
        let dropped = nix::unistd::setgroups(&[])
            .and_then(|()| nix::unistd::setgid(nix::unistd::Gid::from_raw(gid)))
            .and_then(|()| nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)));
        if let Err(e) = dropped {
            return io::Error::other(format!("switching to uid {uid} gid {gid}: {e}"));
        }
    }
    // The environment and working directory are the instance's already.
    std::process::Command::new(program).args(args).exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn settings(root: &Path, mode: Mode) -> Settings {
        Settings { mode, root: root.to_path_buf(), ..Settings::default() }
    }

    const WEB: ResourceAmounts = ResourceAmounts { millicpus: 250, mem_mib: 64, disk_mib: 0, gpus: 0 };

    #[test]
    fn v2_limits_go_in_one_directory_with_controllers_enabled_down_to_it() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma").unwrap();
        let hierarchy = Hierarchy::detect(&settings(root.path(), Mode::Auto), "a1").unwrap().expect("v2");
        assert!(hierarchy.is_v2());
        // The last controller written is what a plain file keeps; every level got it.
        for dir in ["", "baton", "baton/a1"] {
            assert_eq!(read(&root.path().join(dir).join("cgroup.subtree_control")), "+pids", "{dir}");
        }
        let cgroup = hierarchy.create("web-1", &WEB).unwrap();
        let dir = root.path().join("baton/a1/web-1");
        assert_eq!(read(&dir.join("cpu.max")), "25000 100000");
        assert_eq!(read(&dir.join("cpu.weight")), v2_weight(250).to_string());
        assert_eq!(read(&dir.join("memory.max")), (64u64 << 20).to_string());
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
        assert_eq!(read(&dir.join("pids.max")), "4096");
        assert_eq!(cgroup.procs_files(), vec![dir.join("cgroup.procs")]);
        assert!(root.path().join("baton/a1/_loggers").is_dir(), "the loggers' cgroup");

        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500000\nuser_usec 1000000\n").unwrap();
        std::fs::write(dir.join("memory.current"), "50000000\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "anon 40000000\nfile 10000000\ninactive_file 8000000\n").unwrap();
        std::fs::write(dir.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        let counters = cgroup.counters();
        assert_eq!(counters, Counters { cpu_nanos: Some(1_500_000_000), memory_bytes: Some(42_000_000), oom_kills: 1 });
        assert_eq!(cgroup.memory_limit(), Some(64 << 20));
        // An adopted instance finds the same cgroup from its id.
        assert_eq!(hierarchy.cgroup("web-1"), cgroup);
        assert!(cgroup.exists());
    }

    #[test]
    fn v1_limits_go_in_each_controllers_tree() {
        let root = tempfile::tempdir().unwrap();
        for controller in ["cpu", "cpuacct", "memory", "pids", "freezer"] {
            touch(&root.path().join(controller).join("cgroup.procs"));
        }
        let hierarchy = Hierarchy::detect(&settings(root.path(), Mode::Auto), "a1").unwrap().expect("v1");
        assert!(!hierarchy.is_v2());
        let cgroup = hierarchy.create("web-1", &WEB).unwrap();
        let dir = |c: &str| root.path().join(c).join("baton/a1/web-1");
        assert_eq!(read(&dir("cpu").join("cpu.cfs_quota_us")), "25000");
        assert_eq!(read(&dir("cpu").join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&dir("cpu").join("cpu.shares")), "256");
        assert_eq!(read(&dir("memory").join("memory.limit_in_bytes")), (64u64 << 20).to_string());
        assert_eq!(read(&dir("pids").join("pids.max")), "4096");
        assert!(!root.path().join("freezer/baton").exists(), "only the controllers used");
        assert_eq!(cgroup.procs_files().len(), 4);

        std::fs::write(dir("cpuacct").join("cpuacct.usage"), "2000000000\n").unwrap();
        std::fs::write(dir("memory").join("memory.usage_in_bytes"), "30000000\n").unwrap();
        std::fs::write(dir("memory").join("memory.stat"), "cache 100\ntotal_inactive_file 1000000\n").unwrap();
        std::fs::write(dir("memory").join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
            .unwrap();
        assert_eq!(
            cgroup.counters(),
            Counters { cpu_nanos: Some(2_000_000_000), memory_bytes: Some(29_000_000), oom_kills: 2 }
        );
    }

    #[test]
    fn shares_only_leaves_the_quota_unlimited_and_small_asks_get_the_floor() {
        let root = tempfile::tempdir().unwrap();
        for controller in ["cpu", "cpuacct", "memory"] {
            touch(&root.path().join(controller).join("cgroup.procs"));
        }
        let s = Settings { cpu: CpuLimit::Shares, pids_max: 0, ..settings(root.path(), Mode::V1) };
        let hierarchy = Hierarchy::detect(&s, "a1").unwrap().unwrap();
        let tiny = ResourceAmounts { millicpus: 1, mem_mib: 1, disk_mib: 0, gpus: 0 };
        hierarchy.create("t-1", &tiny).unwrap();
        let dir = |c: &str| root.path().join(c).join("baton/a1/t-1");
        assert_eq!(read(&dir("cpu").join("cpu.cfs_quota_us")), "-1");
        assert_eq!(read(&dir("cpu").join("cpu.shares")), "10");
        assert_eq!(read(&dir("memory").join("memory.limit_in_bytes")), (MIN_MEMORY_MIB << 20).to_string());
    }

    #[test]
    fn a_missing_hierarchy_is_an_error_only_when_asked_for() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(Hierarchy::detect(&settings(root.path(), Mode::Auto), "a1").unwrap(), None);
        assert_eq!(Hierarchy::detect(&settings(root.path(), Mode::Off), "a1").unwrap(), None);
        let v2 = Hierarchy::detect(&settings(root.path(), Mode::V2), "a1").unwrap_err();
        assert!(v2.contains("is not a cgroup v2 hierarchy"), "{v2}");
        let v1 = Hierarchy::detect(&settings(root.path(), Mode::V1), "a1").unwrap_err();
        assert!(v1.contains("no cgroup v1 controller"), "{v1}");
    }

    #[test]
    fn weights_follow_kubernetes_conversion() {
        assert_eq!(v1_shares(1000), 1024);
        assert_eq!(v2_weight(1000), 39);
        assert_eq!(v2_weight(1), 1);
        assert_eq!(v2_weight(1_000_000), 10_000);
    }
}
