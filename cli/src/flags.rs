//! Parsing of the flags several commands share. Every error names the flag and the input.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use baton_api::{PortRange, ResourceAmounts, Resources};
use baton_store::{Keyspace, Store};

/// Where the cluster's state lives.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreFlags {
    /// The store: etcd://host:port[,host:port…]
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// The prefix of every key, so several installations can share one etcd.
    #[arg(long, default_value = baton_store::keys::DEFAULT_ROOT)]
    pub prefix: String,
    /// Speak TLS to etcd, trusting this CA (PEM) for its certificate.
    #[arg(long, value_name = "FILE")]
    pub store_ca_file: Option<PathBuf>,
    /// The client certificate (PEM) to show etcd, when it checks clients; needs --store-key-file.
    #[arg(long, value_name = "FILE", requires = "store_key_file", requires = "store_ca_file")]
    pub store_cert_file: Option<PathBuf>,
    /// The key of --store-cert-file (PEM).
    #[arg(long, value_name = "FILE", requires = "store_cert_file")]
    pub store_key_file: Option<PathBuf>,
}

impl StoreFlags {
    /// Connects to the store (waiting at most 10 s for it to answer).
    pub async fn connect(&self) -> Result<Arc<dyn Store>> {
        Ok(Arc::new(self.connect_etcd().await?))
    }

    /// Connects to etcd itself (for administering it: users, roles, authentication).
    pub async fn connect_etcd(&self) -> Result<baton_store::etcd::EtcdStore> {
        let client = match (&self.store_cert_file, &self.store_key_file) {
            (Some(cert), Some(key)) => Some((read_pem("--store-cert-file", cert)?, read_pem("--store-key-file", key)?)),
            _ => None,
        };
        self.connect_etcd_as(client).await
    }

    /// Connects to etcd showing `client` (certificate and key, PEM) rather than the files of
    /// --store-cert-file and --store-key-file.
    pub async fn connect_etcd_as(&self, client: Option<(Vec<u8>, Vec<u8>)>) -> Result<baton_store::etcd::EtcdStore> {
        let tls = match &self.store_ca_file {
            None => None,
            Some(ca) => Some(baton_store::etcd::EtcdTls { ca_pem: read_pem("--store-ca-file", ca)?, client }),
        };
        let Some(url) = &self.store else {
            anyhow::bail!("--store URL is required: where the store is (etcd://host:port[,host:port…])");
        };
        connect_etcd(url, tls.as_ref()).await
    }

    pub fn keys(&self) -> Keyspace {
        Keyspace::new(&self.prefix)
    }
}

/// How an agent holds instances to the resources they asked for.
#[derive(clap::Args, Debug, Clone)]
pub struct IsolationFlags {
    /// Instances' cgroups: auto (v2 where mounted, else v1; none if the agent cannot create
    /// them, e.g. not root), v1, v2, or off (resources are then only bookkeeping).
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub cgroups: baton_agent::cgroups::Mode,
    /// Where the cgroup hierarchies are mounted.
    #[arg(long, default_value = "/sys/fs/cgroup", value_name = "DIR")]
    pub cgroup_root: PathBuf,
    /// The cgroup, from the hierarchy's root, that holds every agent's cgroup (each agent's is
    /// <this>/<agent name>, and each instance's is below it).
    #[arg(long, default_value = "baton", value_name = "PATH")]
    pub cgroup_parent: PathBuf,
    /// How `cpus` limits an instance: quota (at most that much cpu time, even on an idle
    /// machine) or shares (a weight only: idle cpu may be used).
    #[arg(long, value_enum, default_value = "quota", value_name = "HOW")]
    pub cpu_limit: baton_agent::cgroups::CpuLimit,
    /// The most processes and threads one instance may have (0: no limit).
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub instance_pids_max: u64,
    /// How often each instance's cpu, memory and disk use is measured (and its sandbox held to
    /// its `disk`); what is measured is written with its status at most every
    /// --status-refresh.
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub usage_interval: std::time::Duration,
}

impl IsolationFlags {
    pub fn cgroups(&self) -> baton_agent::cgroups::Settings {
        // Relative to the hierarchy's root, whatever the user wrote.
        let parent = self.cgroup_parent.strip_prefix("/").unwrap_or(&self.cgroup_parent).to_path_buf();
        baton_agent::cgroups::Settings {
            mode: self.cgroups,
            root: self.cgroup_root.clone(),
            parent,
            cpu: self.cpu_limit,
            pids_max: self.instance_pids_max,
        }
    }
}

/// The API server's DNS for apps (`APP.NAMESPACE.DOMAIN`; see docs/dns.md).
#[derive(clap::Args, Debug, Clone)]
pub struct DnsFlags {
    /// Answer DNS queries (UDP and TCP) here for the names of apps' ready instances, under
    /// each tenant's service domain and --cluster-domain, e.g. 127.0.0.1:5353 (default: no
    /// DNS).
    #[arg(long, value_name = "ADDRESS")]
    pub dns_listen: Option<std::net::SocketAddr>,
    /// The domain every namespace's apps are found under, as APP.NAMESPACE.DOMAIN ("" for
    /// tenants' service domains only).
    #[arg(long, default_value = "baton.local", value_name = "DOMAIN", value_parser = cluster_domain)]
    pub cluster_domain: String,
    /// Seconds resolvers may keep an answer.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub dns_ttl: u32,
}

impl DnsFlags {
    /// Binds the DNS server, when one is asked for, and starts it on `store` until
    /// `shutdown`; says where it listens.
    pub async fn start(
        &self,
        store: std::sync::Arc<dyn baton_store::Store>,
        keys: baton_store::Keyspace,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        let Some(address) = self.dns_listen else { return Ok(()) };
        let server = baton_apiserver::dns::DnsServer::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("--dns-listen {address}: cannot listen there: {e}"))?;
        let bound = server.local_addr()?;
        let domain = (!self.cluster_domain.is_empty()).then(|| self.cluster_domain.clone());
        match &domain {
            Some(domain) => {
                eprintln!("DNS on {bound} (UDP and TCP): APP.NAMESPACE.{domain} and tenants' service domains")
            }
            None => eprintln!("DNS on {bound} (UDP and TCP): tenants' service domains"),
        }
        let options = baton_apiserver::dns::DnsOptions { cluster_domain: domain, ttl: self.dns_ttl };
        tokio::spawn(server.run(store, keys, options, shutdown));
        Ok(())
    }
}

/// `--cluster-domain`: empty, or a DNS subdomain.
fn cluster_domain(input: &str) -> Result<String, String> {
    let domain = input.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return Ok(domain);
    }
    match baton_api::names::dns_subdomain_problem(&domain) {
        Some(problem) => Err(format!("{input:?}: {problem}")),
        None => Ok(domain),
    }
}

/// How an agent keeps instances' output and reports on them.
#[derive(clap::Args, Debug, Clone)]
pub struct OutputFlags {
    /// An instance's status is written at once when its phase, a health check's passing or
    /// failing, steadiness or readiness changes; probe counters and times alone are written
    /// at most this often (0s: after every probe).
    #[arg(long, default_value = "30s", value_parser = duration, value_name = "DURATION")]
    pub status_refresh: std::time::Duration,
    /// An instance's stdout (and stderr) file is rotated at this size: 16Mi, 500Ki, 1G or
    /// bytes.
    #[arg(long, default_value = "16Mi", value_parser = bytes, value_name = "SIZE")]
    pub log_max_size: u64,
    /// Rotated files kept per stream (stdout.1 … stdout.N).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub log_files: usize,
}

impl OutputFlags {
    /// Output through `baton logger` processes (this program), rotated as the flags say.
    pub fn logging(&self) -> Result<baton_agent::process::Logging> {
        let program = std::env::current_exe().context("finding this program, to run `baton logger`")?;
        let rotation = baton_agent::logger::Rotation { max_bytes: self.log_max_size, keep: self.log_files };
        Ok(baton_agent::process::Logging { program: Some(program), rotation })
    }
}

/// A size: bytes, or with a suffix K, M, G (powers of 1000) or Ki, Mi, Gi (of 1024).
pub fn bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a size (e.g. 16Mi, 500Ki, 4096)"))?;
    let factor: u64 = match unit {
        "" => 1,
        "K" | "k" => 1000,
        "M" => 1000 * 1000,
        "G" => 1000 * 1000 * 1000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => return Err(format!("{text:?}: unknown unit {other:?} (use K, M, G, Ki, Mi or Gi)")),
    };
    let size = number.checked_mul(factor).ok_or_else(|| format!("{text:?} is too large"))?;
    if size == 0 {
        return Err(format!("{text:?}: a size must be more than 0"));
    }
    Ok(size)
}

/// How long a controller keeps ended instances, with their sandboxes and logs.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct RetentionFlags {
    /// Ended instances kept per app (with their sandbox and logs), the latest first.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub keep_ended: usize,
    /// How long an ended instance is kept at most (e.g. 1h, 30m).
    #[arg(long, default_value = "1h", value_parser = duration, value_name = "DURATION")]
    pub keep_ended_for: Duration,
}

impl RetentionFlags {
    pub fn retention(&self) -> baton_controllers::plan::Retention {
        baton_controllers::plan::Retention {
            per_app: self.keep_ended,
            max_age: jiff::SignedDuration::try_from(self.keep_ended_for).unwrap_or(jiff::SignedDuration::MAX),
        }
    }
}

/// Connects to the store at `url`.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    connect_with(url, None).await
}

async fn connect_with(url: &str, tls: Option<&baton_store::etcd::EtcdTls>) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(connect_etcd(url, tls).await?))
}

pub async fn connect_etcd(url: &str, tls: Option<&baton_store::etcd::EtcdTls>) -> Result<baton_store::etcd::EtcdStore> {
    let endpoints = baton_store::etcd::parse_url(url).map_err(|e| anyhow::anyhow!("--store {e}"))?;
    let store = baton_store::etcd::EtcdStore::connect_with(&endpoints, Duration::from_secs(10), tls)
        .await
        .with_context(|| match tls {
            None => format!("--store {url}: is etcd running there (without TLS; give --store-ca-file for TLS)?"),
            Some(_) => format!(
                "--store {url}: is etcd running there, and do --store-ca-file (and the client certificate) match it?"
            ),
        })?;
    Ok(store)
}

/// A PEM file a flag names, with an error naming the flag and the file.
pub fn read_pem(flag: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("{flag} {}: cannot read it", path.display()))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        bail!("{flag} {}: not a PEM file (no -----BEGIN line)", path.display());
    }
    Ok(bytes)
}

/// A duration such as `10s`, `500ms` or `2m`.
pub fn duration(input: &str) -> Result<Duration, String> {
    humantime::parse_duration(input).map_err(|e| format!("{input:?} is not a duration like 10s, 500ms or 2m: {e}"))
}

/// `cpus=4,mem=4096,disk=1024,gpus=1`: the resources given override `base` (the machine's).
pub fn resources(input: &str, base: ResourceAmounts) -> Result<ResourceAmounts> {
    resources_of("--resources", input, base)
}

/// As [`resources`], for the flag named `flag`.
pub fn resources_of(flag: &str, input: &str, base: ResourceAmounts) -> Result<ResourceAmounts> {
    let mut given = Resources {
        cpus: base.millicpus as f64 / 1000.0,
        mem: base.mem_mib as f64,
        disk: base.disk_mib as f64,
        gpus: base.gpus as i64,
    };
    for (key, value) in pairs(input, flag)? {
        let number: f64 = value
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n >= 0.0)
            .with_context(|| format!("{flag} {input:?}: {key}={value} is not a non-negative number"))?;
        match key.as_str() {
            "cpus" => given.cpus = number,
            "mem" => given.mem = number,
            "disk" => given.disk = number,
            "gpus" if number.fract() == 0.0 => given.gpus = number as i64,
            "gpus" => bail!("{flag} {input:?}: gpus={value} is not a whole number"),
            other => bail!(
                "{flag} {input:?}: unknown resource {other:?} (cpus, mem, disk and gpus are known; mem and disk in MiB)"
            ),
        }
    }
    Ok(given.amounts())
}

/// `rack=r1,zone=a`.
pub fn attributes(input: &str) -> Result<BTreeMap<String, String>> {
    let mut attributes = BTreeMap::new();
    for (key, value) in pairs(input, "--attributes")? {
        if let Some(problem) = baton_api::names::label_key_problem(&key) {
            bail!("--attributes {input:?}: attribute name {key:?}: {problem}");
        }
        attributes.insert(key, value);
    }
    Ok(attributes)
}

/// `31000-32000[,33000-33100]`.
pub fn port_ranges(input: &str) -> Result<Vec<PortRange>> {
    let ranges = input
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.parse::<PortRange>().map_err(|e| anyhow::anyhow!("--ports {input:?}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    if ranges.is_empty() {
        bail!("--ports {input:?}: no range given, e.g. 31000-32000");
    }
    Ok(ranges)
}

fn pairs(input: &str, flag: &str) -> Result<Vec<(String, String)>> {
    input
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => bail!("{flag} {input:?}: {pair:?} is not key=value"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_override_the_machine() {
        let machine = ResourceAmounts { millicpus: 8000, mem_mib: 16000, disk_mib: 100, gpus: 0 };
        let r = resources("cpus=2.5,mem=4096,gpus=2", machine).unwrap();
        assert_eq!(r, ResourceAmounts { millicpus: 2500, mem_mib: 4096, disk_mib: 100, gpus: 2 });
        let err = resources("tpus=1", machine).unwrap_err().to_string();
        assert!(err.contains("tpus") && err.contains("--resources"), "{err}");
        assert!(resources("gpus=0.5", machine).unwrap_err().to_string().contains("whole number"));
        assert!(resources("mem=-1", machine).unwrap_err().to_string().contains("mem=-1"));
        assert!(resources("mem", machine).unwrap_err().to_string().contains("key=value"));
        let reserved = resources_of("--reserve", "cpus=0.5,mem=1024", ResourceAmounts::default()).unwrap();
        assert_eq!(
            machine.minus(reserved),
            ResourceAmounts { millicpus: 7500, mem_mib: 14976, disk_mib: 100, gpus: 0 }
        );
        let err = resources_of("--reserve", "ram=1", machine).unwrap_err().to_string();
        assert!(err.starts_with("--reserve \"ram=1\""), "errors name the flag: {err}");
    }

    #[test]
    fn attributes_and_ports() {
        assert_eq!(attributes("rack=r1, zone=a").unwrap().get("zone").map(String::as_str), Some("a"));
        assert!(attributes("Bad Key=x").is_err());
        assert_eq!(port_ranges("31000-31999,33000").unwrap().len(), 2);
        let err = port_ranges("31000-").unwrap_err().to_string();
        assert!(err.contains("--ports") && err.contains("31000-"), "{err}");
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(duration("ten").unwrap_err().contains("ten"));
    }
}
