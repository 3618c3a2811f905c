//! DNS for apps: the API server answers the names of ready instances under each tenant's
//! service domain (DESIGN.md §10) and under the cluster domain, as Mesos-DNS did for each
//! (service) Marathon and cluster DNS does for Kubernetes Services:
//!
//! | name | type | answer |
//! |---|---|---|
//! | `APP.NAMESPACE.DOMAIN` | A, AAAA | the hosts of the app's ready instances |
//! | `INSTANCE.APP.NAMESPACE.DOMAIN` | A, AAAA | that instance's host, while it is ready |
//! | `_PORT._tcp.APP.NAMESPACE.DOMAIN` | SRV | each ready instance's host port named PORT |
//!
//! A tenant's domain serves its own namespaces only; the cluster domain serves every
//! namespace; where both could, the longer (the tenant's) decides. An instance is ready when
//! it is wanted running, its agent reports, its process runs and passes its health checks and
//! its readiness check — what Kubernetes publishes as ready endpoints. An agent whose host is
//! a name, not an address, is looked up (and the answer kept for the TTL). Names outside
//! these domains are refused: this is not a recursive resolver. Answers come from memory,
//! kept current by watching the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use baton_api::tenant::Tenant;
use baton_api::{Goal, InstanceRecord, Phase, StatusRecord};
use baton_store::{EventKind, KeyValue, Keyspace, PageRequest, Revision, Store, WatchEvent};
use futures::StreamExt;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// How the DNS answers.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// The domain every namespace's apps are found under; `None`: tenants' domains only.
    pub cluster_domain: Option<String>,
    /// Seconds resolvers may keep an answer (and this server a looked-up agent host).
    pub ttl: u32,
}

/// The largest UDP answer sent to a client that did not say (EDNS) it takes more.
const CLASSIC_UDP: usize = 512;
/// The largest UDP answer sent at all (the DNS flag day's safe size).
const MAX_UDP: usize = 1232;
/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How long looking up an agent's host name may take.
const HOST_LOOKUP: Duration = Duration::from_secs(2);

/// `(agent, instance id)`.
type Slot = (String, String);

/// What the DNS needs of an instance record.
#[derive(Debug, Clone)]
struct Entry {
    namespace: String,
    app: String,
    host: String,
    ports: Vec<(Option<String>, u16)>,
    wanted: bool,
    checks: usize,
    readiness: bool,
}

impl Entry {
    fn of(record: &InstanceRecord) -> Self {
        Self {
            namespace: record.run.app.namespace.clone(),
            app: record.run.app.name.clone(),
            host: record.host.clone(),
            ports: record.ports.iter().map(|p| (p.name.clone(), p.port)).collect(),
            wanted: record.goal == Goal::Running,
            checks: record.run.health_checks.len(),
            readiness: !record.run.readiness_checks.is_empty(),
        }
    }
}

/// What the DNS needs of a status record.
#[derive(Debug, Clone, Copy, Default)]
struct Health {
    running: bool,
    results: usize,
    all_passing: bool,
    ready: bool,
}

impl Health {
    fn of(status: &StatusRecord) -> Self {
        Self {
            running: status.phase == Phase::Running,
            results: status.health.len(),
            all_passing: status.health.iter().all(|r| r.passing == Some(true)),
            ready: status.readiness.as_ref().is_some_and(|r| r.passing == Some(true)),
        }
    }
}

/// Every name's data, from the store.
#[derive(Default)]
struct Table {
    entries: HashMap<Slot, Entry>,
    health: HashMap<Slot, Health>,
    /// Agents that report.
    agents: HashSet<String>,
    /// Instances by `(namespace, app)`.
    by_app: BTreeMap<(String, String), BTreeSet<Slot>>,
    /// Tenants with a service domain: name → (domain, lowercase without the final dot; its
    /// namespaces).
    tenants: BTreeMap<String, (String, BTreeSet<String>)>,
    /// The last store revision taken in (the zones' SOA serial).
    revision: Revision,
}

/// Where a target of an SRV answer is: an instance (named under the zone) on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    instance: String,
    app: String,
    namespace: String,
    host: String,
    port: u16,
}

/// What a name is, in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    /// Not under any domain served here.
    Refused,
    /// Under `zone`, with no records: no such name (`exists` false), or a name with none of
    /// the asked type (an app without ready instances, a namespace).
    Empty { zone: String, exists: bool },
    /// The zone itself.
    Apex { zone: String },
    /// An app's or an instance's hosts.
    Hosts { zone: String, hosts: Vec<String> },
    /// An app's instances serving a named port.
    Services { zone: String, targets: Vec<Target> },
}

impl Lookup {
    /// The zone the name is in; `None` when refused.
    fn zone(&self) -> Option<&str> {
        match self {
            Lookup::Refused => None,
            Lookup::Empty { zone, .. }
            | Lookup::Apex { zone }
            | Lookup::Hosts { zone, .. }
            | Lookup::Services { zone, .. } => Some(zone),
        }
    }
}

impl Table {
    fn ready(&self, slot: &Slot, entry: &Entry) -> bool {
        let Some(health) = self.health.get(slot) else { return false };
        entry.wanted
            && self.agents.contains(&slot.0)
            && health.running
            && (entry.checks == 0 || (health.results == entry.checks && health.all_passing))
            && (!entry.readiness || health.ready)
    }

    /// The ready instances of an app.
    fn ready_instances<'t>(&'t self, namespace: &str, app: &str) -> impl Iterator<Item = (&'t Slot, &'t Entry)> + 't {
        let key = (namespace.to_string(), app.to_string());
        self.by_app
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|slot| Some((slot, self.entries.get(slot)?)))
            .filter(|(slot, entry)| self.ready(slot, entry))
    }

    fn has_app(&self, namespace: &str, app: &str) -> bool {
        self.by_app.contains_key(&(namespace.to_string(), app.to_string()))
    }

    /// The zone `name` is in, and the namespaces it serves (`None`: all).
    fn zone_of<'t>(&'t self, name: &str, cluster: Option<&'t str>) -> Option<(&'t str, Option<&'t BTreeSet<String>>)> {
        let within = |domain: &str| name == domain || name.strip_suffix(domain).is_some_and(|r| r.ends_with('.'));
        // The longest domain decides; of two equal ones (only a race of two writes makes
        // them), the first tenant by name.
        let tenant = self
            .tenants
            .iter()
            .filter(|(_, (domain, _))| within(domain))
            .min_by(|(a, (da, _)), (b, (db, _))| db.len().cmp(&da.len()).then(a.cmp(b)));
        match tenant {
            Some((_, (domain, namespaces))) => Some((domain.as_str(), Some(namespaces))),
            None => cluster.filter(|c| within(c)).map(|c| (c, None)),
        }
    }

    /// What `name` (lowercase, without the final dot) is.
    fn lookup(&self, name: &str, cluster: Option<&str>) -> Lookup {
        let Some((zone, namespaces)) = self.zone_of(name, cluster) else { return Lookup::Refused };
        let zone_owned = zone.to_string();
        let relative = name[..name.len() - zone.len()].trim_end_matches('.');
        if relative.is_empty() {
            return Lookup::Apex { zone: zone_owned };
        }
        let labels: Vec<&str> = relative.split('.').collect();
        let missing = |exists: bool| Lookup::Empty { zone: zone_owned.clone(), exists };
        let namespace = labels[labels.len() - 1];
        if namespaces.is_some_and(|served| !served.contains(namespace)) {
            return missing(false);
        }
        match labels.as_slice() {
            [_] => missing(self.by_app.keys().any(|(ns, _)| ns == namespace)),
            [app, _] => {
                if !self.has_app(namespace, app) {
                    return missing(false);
                }
                let hosts: BTreeSet<&str> =
                    self.ready_instances(namespace, app).map(|(_, e)| e.host.as_str()).collect();
                Lookup::Hosts { zone: zone_owned, hosts: hosts.into_iter().map(String::from).collect() }
            }
            [instance, app, _] => match self.ready_instances(namespace, app).find(|(slot, _)| slot.1 == *instance) {
                Some((_, entry)) => Lookup::Hosts { zone: zone_owned, hosts: vec![entry.host.clone()] },
                None => missing(false),
            },
            [port, "_tcp", app, _] if port.starts_with('_') => {
                if !self.has_app(namespace, app) {
                    return missing(false);
                }
                let wanted = &port[1..];
                let targets: Vec<Target> = self
                    .ready_instances(namespace, app)
                    .flat_map(|(slot, entry)| {
                        entry.ports.iter().filter(|(name, _)| name.as_deref() == Some(wanted)).map(|(_, port)| Target {
                            instance: slot.1.clone(),
                            app: entry.app.clone(),
                            namespace: entry.namespace.clone(),
                            host: entry.host.clone(),
                            port: *port,
                        })
                    })
                    .collect();
                if targets.is_empty() {
                    // The app is there; the port name may be too, with nothing ready.
                    return missing(true);
                }
                Lookup::Services { zone: zone_owned, targets }
            }
            _ => missing(false),
        }
    }

    /// Takes in one store change.
    fn ingest(&mut self, keys: &Keyspace, tenants: &str, event: &WatchEvent) {
        let key = event.kv.key.as_str();
        let put = event.kind == EventKind::Put;
        self.revision = self.revision.max(event.kv.mod_revision);
        if let Some((agent, id)) = keys.parse_instance_key(key) {
            let slot = (agent.to_string(), id.to_string());
            if let Some(old) = self.entries.remove(&slot) {
                let app = (old.namespace, old.app);
                if let Some(set) = self.by_app.get_mut(&app) {
                    set.remove(&slot);
                    if set.is_empty() {
                        self.by_app.remove(&app);
                    }
                }
            }
            if let Some(record) = parse::<InstanceRecord>(&event.kv).filter(|_| put) {
                let entry = Entry::of(&record);
                self.by_app.entry((entry.namespace.clone(), entry.app.clone())).or_default().insert(slot.clone());
                self.entries.insert(slot, entry);
            }
        } else if let Some((agent, id)) = keys.parse_status_key(key) {
            let slot = (agent.to_string(), id.to_string());
            match parse::<StatusRecord>(&event.kv).filter(|_| put) {
                Some(status) => _ = self.health.insert(slot, Health::of(&status)),
                None => _ = self.health.remove(&slot),
            }
        } else if let Some(agent) = keys.parse_agent_key(key) {
            if put {
                self.agents.insert(agent.to_string());
            } else {
                self.agents.remove(agent);
            }
        } else if let Some(name) = key.strip_prefix(tenants).filter(|n| !n.is_empty() && !n.contains('/')) {
            let tenant = parse::<Tenant>(&event.kv).filter(|_| put);
            match tenant.and_then(|t| Some((t.spec.service_domain?, t.spec.namespaces))) {
                Some((domain, namespaces)) => {
                    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                    self.tenants.insert(name.to_string(), (domain, namespaces.into_iter().collect()));
                }
                None => _ = self.tenants.remove(name),
            }
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    serde_json::from_slice(&kv.value).ok()
}

/// The DNS server: a UDP socket and a TCP listener on one address.
pub struct DnsServer {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
}

/// What every request handler shares.
struct Shared {
    table: RwLock<Table>,
    options: DnsOptions,
    /// Agents' host names, looked up: the addresses and when.
    hosts: Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` (port 0: one free port for both).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        Ok(Self { udp: Arc::new(udp), tcp })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Follows the store and answers until `shutdown`.
    pub async fn run(self, store: Arc<dyn Store>, keys: Keyspace, options: DnsOptions, shutdown: CancellationToken) {
        let options = DnsOptions {
            cluster_domain: options.cluster_domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
            ..options
        };
        let shared = Arc::new(Shared { table: RwLock::new(Table::default()), options, hosts: Mutex::default() });
        let follow = tokio::spawn(follow(store, keys, shared.clone(), shutdown.clone()));
        let udp = tokio::spawn(serve_udp(self.udp, shared.clone(), shutdown.clone()));
        serve_tcp(self.tcp, shared, shutdown).await;
        follow.abort();
        udp.abort();
    }
}

/// Keeps the table current: reads everything, then follows the changes; starts over after
/// an error (a compacted watch, a store that went away).
async fn follow(store: Arc<dyn Store>, keys: Keyspace, shared: Arc<Shared>, shutdown: CancellationToken) {
    let tenants = keys.registry(baton_api::GROUP, "tenants", None);
    while !shutdown.is_cancelled() {
        let result = tokio::select! {
            result = load_and_watch(store.as_ref(), &keys, &tenants, &shared) => result,
            _ = shutdown.cancelled() => return,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "DNS: following the store failed; reading it again in 1 s");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

async fn load_and_watch(store: &dyn Store, keys: &Keyspace, tenants: &str, shared: &Shared) -> baton_store::Result<()> {
    let agents = store.range(&keys.agents()).await?;
    let revision = agents.revision;
    let prefixes = [keys.agents(), keys.instances(), keys.statuses(), tenants.to_string()];
    let mut table = Table::default();
    let take = |kvs: Vec<KeyValue>, table: &mut Table| {
        for kv in kvs {
            table.ingest(keys, tenants, &WatchEvent { kind: EventKind::Put, kv, prev_kv: None });
        }
    };
    take(agents.kvs, &mut table);
    for prefix in &prefixes[1..] {
        let request = PageRequest { prefix: prefix.clone(), after: None, limit: 0, revision: Some(revision) };
        take(store.range_page(&request).await?.kvs, &mut table);
    }
    table.revision = table.revision.max(revision);
    *shared.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    let mut watches = Vec::new();
    for prefix in &prefixes {
        watches.push(store.watch_current(prefix, revision + 1).await?);
    }
    let mut changes = futures::stream::select_all(watches);
    while let Some(batch) = changes.next().await {
        let batch = batch?;
        let mut table = shared.table.write().unwrap_or_else(|p| p.into_inner());
        for event in &batch.events {
            table.ingest(keys, tenants, event);
        }
    }
    Err(baton_store::Error::Backend("the store's watch ended".into()))
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut buffer = vec![0u8; 4096];
    loop {
        let (len, peer) = tokio::select! {
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS: receiving over UDP failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(request) = Message::from_vec(&buffer[..len]) else { continue };
        let (socket, shared) = (socket.clone(), shared.clone());
        tokio::spawn(async move {
            let Some(response) = shared.respond(&request).await else { return };
            let limit = match &request.edns {
                Some(edns) => usize::from(edns.max_payload()).clamp(CLASSIC_UDP, MAX_UDP),
                None => CLASSIC_UDP,
            };
            let bytes = match response.to_vec() {
                Ok(bytes) if bytes.len() <= limit => bytes,
                // Too big for UDP: the client asks again over TCP.
                _ => match response.truncate().to_vec() {
                    Ok(bytes) => bytes,
                    Err(_) => return,
                },
            };
            let _ = socket.send_to(&bytes, peer).await;
        });
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS: accepting over TCP failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tcp_connection(stream, &shared).await;
        });
    }
}

/// Answers the requests of one TCP connection (each framed by its two-byte length).
async fn tcp_connection(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            _ => return Ok(()),
        };
        let mut request = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut request)).await??;
        let Ok(request) = Message::from_vec(&request) else { return Ok(()) };
        let Some(response) = shared.respond(&request).await else { continue };
        let Ok(bytes) = response.to_vec() else { return Ok(()) };
        let Ok(len) = u16::try_from(bytes.len()) else { return Ok(()) };
        stream.write_u16(len).await?;
        stream.write_all(&bytes).await?;
    }
}

impl Shared {
    /// The answer to `request`; `None` for a message that is not a request.
    async fn respond(&self, request: &Message) -> Option<Message> {
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP as u16);
            response.set_edns(edns);
        }
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return Some(response);
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return Some(response);
        };
        response.add_query(query.clone());
        let asked = query.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let (lookup, serial) = {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            (table.lookup(&asked, self.options.cluster_domain.as_deref()), table.revision)
        };
        let qtype = query.query_type();
        let ttl = self.options.ttl;
        let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
        let Some(zone) = lookup.zone().map(str::to_string) else {
            response.metadata.response_code = ResponseCode::Refused;
            return Some(response);
        };
        response.metadata.authoritative = true;
        let name = query.name().clone();
        match lookup {
            Lookup::Refused | Lookup::Empty { exists: true, .. } => {}
            Lookup::Empty { exists: false, .. } => response.metadata.response_code = ResponseCode::NXDomain,
            Lookup::Apex { .. } => {
                if wants(RecordType::SOA) {
                    response.add_answer(soa(&zone, serial, ttl)?);
                }
            }
            Lookup::Hosts { hosts, .. } => {
                let mut addresses = BTreeSet::new();
                for host in &hosts {
                    addresses.extend(self.addresses(host).await);
                }
                for address in addresses {
                    match address {
                        IpAddr::V4(v4) if wants(RecordType::A) => {
                            response.add_answer(Record::from_rdata(name.clone(), ttl, RData::A(A(v4))));
                        }
                        IpAddr::V6(v6) if wants(RecordType::AAAA) => {
                            response.add_answer(Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(v6))));
                        }
                        _ => {}
                    }
                }
            }
            Lookup::Services { targets, .. } => {
                if wants(RecordType::SRV) {
                    for target in &targets {
                        // An instance on an address is named under the zone (its A record goes
                        // along); one on a named host points at that name.
                        let (target_name, address) = match target.host.parse::<IpAddr>() {
                            Ok(address) => {
                                let instance =
                                    format!("{}.{}.{}.{zone}.", target.instance, target.app, target.namespace);
                                (Name::from_ascii(instance), Some(address))
                            }
                            Err(_) => (Name::from_ascii(format!("{}.", target.host)), None),
                        };
                        // A host that is no DNS name leaves that instance out, not the answer.
                        let Ok(target_name) = target_name else { continue };
                        let srv = SRV::new(0, 10, target.port, target_name.clone());
                        response.add_answer(Record::from_rdata(name.clone(), ttl, RData::SRV(srv)));
                        match address {
                            Some(IpAddr::V4(v4)) => {
                                response.add_additional(Record::from_rdata(target_name, ttl, RData::A(A(v4))));
                            }
                            Some(IpAddr::V6(v6)) => {
                                response.add_additional(Record::from_rdata(target_name, ttl, RData::AAAA(AAAA(v6))));
                            }
                            None => {}
                        }
                    }
                }
            }
        }
        // No records for the name: the zone's SOA tells resolvers how long to remember that.
        if response.answers.is_empty() {
            response.add_authority(soa(&zone, serial, ttl)?);
        }
        Some(response)
    }

    /// The addresses of an agent's host: itself if it is one, else looked up (and kept for
    /// the TTL; a failed lookup is kept as none).
    async fn addresses(&self, host: &str) -> Vec<IpAddr> {
        if let Ok(address) = host.parse::<IpAddr>() {
            return vec![address];
        }
        let keep = Duration::from_secs(u64::from(self.options.ttl.max(1)));
        if let Some((addresses, at)) = self.hosts.lock().unwrap_or_else(|p| p.into_inner()).get(host)
            && at.elapsed() < keep
        {
            return addresses.clone();
        }
        let looked_up = tokio::time::timeout(HOST_LOOKUP, tokio::net::lookup_host((host, 0))).await;
        let addresses: Vec<IpAddr> = match looked_up {
            Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
            _ => Vec::new(),
        };
        self.hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_string(), (addresses.clone(), Instant::now()));
        addresses
    }
}

/// The zone's SOA record.
fn soa(zone: &str, serial: Revision, ttl: u32) -> Option<Record> {
    let apex = Name::from_ascii(format!("{zone}.")).ok()?;
    let primary = Name::from_ascii(format!("ns.{zone}.")).ok()?;
    let contact = Name::from_ascii(format!("hostmaster.{zone}.")).ok()?;
    let soa = SOA::new(primary, contact, serial as u32, 60, 10, 86_400, ttl);
    Some(Record::from_rdata(apex, ttl, RData::SOA(soa)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_api::CheckResult;

    fn keys() -> Keyspace {
        Keyspace::default()
    }

    fn tenants() -> String {
        keys().registry(baton_api::GROUP, "tenants", None)
    }

    fn put(key: String, value: serde_json::Value) -> WatchEvent {
        let kv = KeyValue {
            key,
            value: value.to_string().into_bytes(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        };
        WatchEvent { kind: EventKind::Put, kv, prev_kv: None }
    }

    fn record(namespace: &str, app: &str, id: &str, agent: &str, host: &str) -> InstanceRecord {
        // As stored: what is left out takes its default.
        serde_json::from_value(serde_json::json!({
            "id": id, "app": {"namespace": namespace, "name": app, "uid": "u"}, "agent": agent, "host": host,
            "version": "v", "createdAt": "2026-01-01T00:00:00Z", "goal": "Running", "command": {"shell": "x"},
            "resources": {"millicpus": 100, "memMib": 32, "diskMib": 0, "gpus": 0}, "ports": [{"name": "http", "port": 31000}],
            "killGraceSeconds": 3,
        }))
        .expect("an instance record")
    }

    fn running() -> StatusRecord {
        StatusRecord::new(Phase::Running)
    }

    /// A table with a reporting agent a1, the tenant team-a (domain a.example, namespace
    /// shop) and these instances, each with its status.
    fn table(instances: &[(InstanceRecord, StatusRecord)]) -> Table {
        let keys = keys();
        let mut table = Table::default();
        let mut take = |event: WatchEvent| table.ingest(&keys, &tenants(), &event);
        take(put(keys.agent("a1"), serde_json::json!({})));
        let tenant = serde_json::json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "team-a"},
            "spec": {"namespaces": ["shop"], "serviceDomain": "A.Example."}
        });
        take(put(format!("{}team-a", tenants()), tenant));
        for (record, status) in instances {
            take(put(keys.instance(&record.agent, &record.id), serde_json::to_value(record).unwrap()));
            take(put(keys.status(&record.agent, &record.id), serde_json::to_value(status).unwrap()));
        }
        table
    }

    fn hosts(lookup: Lookup) -> Vec<String> {
        match lookup {
            Lookup::Hosts { hosts, .. } => hosts,
            other => panic!("not hosts: {other:?}"),
        }
    }

    #[test]
    fn an_apps_name_lists_the_hosts_of_its_ready_instances_only() {
        let mut failing = running();
        failing.health = vec![CheckResult { passing: Some(false), ..CheckResult::default() }];
        let mut checked = record("shop", "web", "web-3", "a1", "10.0.0.3");
        std::sync::Arc::make_mut(&mut checked.run).health_checks =
            vec![serde_json::from_value(serde_json::json!({"protocol": "TCP"})).unwrap()];
        let stopping = InstanceRecord { goal: Goal::Stopped, ..record("shop", "web", "web-4", "a1", "10.0.0.4") };
        let table = table(&[
            (record("shop", "web", "web-1", "a1", "10.0.0.1"), running()),
            (record("shop", "web", "web-2", "a1", "10.0.0.1"), running()),
            (checked, failing),
            (stopping, running()),
            (record("shop", "web", "web-5", "gone", "10.0.0.5"), running()),
            (record("shop", "web", "web-6", "a1", "10.0.0.6"), StatusRecord::new(Phase::Staging)),
        ]);
        assert_eq!(hosts(table.lookup("web.shop.a.example", None)), ["10.0.0.1"]);
        assert_eq!(hosts(table.lookup("web-1.web.shop.a.example", None)), ["10.0.0.1"]);
        for not_ready in ["web-3", "web-4", "web-5", "web-6"] {
            let name = format!("{not_ready}.web.shop.a.example");
            assert_eq!(table.lookup(&name, None), Lookup::Empty { zone: "a.example".into(), exists: false }, "{name}");
        }
    }

    #[test]
    fn a_tenants_domain_serves_its_namespaces_and_the_cluster_domain_every_one() {
        let table = table(&[
            (record("shop", "web", "web-1", "a1", "10.0.0.1"), running()),
            (record("other", "db", "db-1", "a1", "10.0.0.2"), running()),
        ]);
        let cluster = Some("baton.local");
        assert_eq!(hosts(table.lookup("db.other.baton.local", cluster)), ["10.0.0.2"]);
        assert_eq!(hosts(table.lookup("web.shop.baton.local", cluster)), ["10.0.0.1"]);
        let absent = Lookup::Empty { zone: "a.example".into(), exists: false };
        assert_eq!(table.lookup("db.other.a.example", cluster), absent, "not the tenant's namespace");
        assert_eq!(table.lookup("nope.shop.a.example", cluster), absent);
        assert_eq!(table.lookup("shop.a.example", cluster), Lookup::Empty { zone: "a.example".into(), exists: true });
        assert_eq!(table.lookup("a.example", cluster), Lookup::Apex { zone: "a.example".into() });
        assert_eq!(table.lookup("web.shop.b.example", cluster), Lookup::Refused);
        assert_eq!(table.lookup("db.other.baton.local", None), Lookup::Refused, "no cluster domain");
        assert_eq!(table.lookup("xa.example", cluster), Lookup::Refused, "a suffix is not a subdomain");
    }

    #[test]
    fn a_named_port_gives_a_service_record_per_ready_instance() {
        let table = table(&[
            (record("shop", "web", "web-1", "a1", "10.0.0.1"), running()),
            (record("shop", "web", "web-2", "a1", "node-2.example"), running()),
        ]);
        let Lookup::Services { targets, .. } = table.lookup("_http._tcp.web.shop.a.example", None) else {
            panic!("no services")
        };
        let shown: Vec<(&str, &str, u16)> =
            targets.iter().map(|t| (t.instance.as_str(), t.host.as_str(), t.port)).collect();
        assert_eq!(shown, [("web-1", "10.0.0.1", 31000), ("web-2", "node-2.example", 31000)]);
        assert_eq!(
            table.lookup("_admin._tcp.web.shop.a.example", None),
            Lookup::Empty { zone: "a.example".into(), exists: true }
        );
        assert_eq!(
            table.lookup("_http._udp.web.shop.a.example", None),
            Lookup::Empty { zone: "a.example".into(), exists: false }
        );
    }

    #[test]
    fn records_going_and_tenants_changing_are_followed() {
        let keys = keys();
        let mut table = table(&[(record("shop", "web", "web-1", "a1", "10.0.0.1"), running())]);
        let delete = |key: String| WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue { key, value: Vec::new(), create_revision: 0, mod_revision: 2, version: 0, lease: 0 },
            prev_kv: None,
        };
        table.ingest(&keys, &tenants(), &delete(keys.instance("a1", "web-1")));
        assert_eq!(table.lookup("web.shop.a.example", None), Lookup::Empty { zone: "a.example".into(), exists: false });
        assert!(table.by_app.is_empty());
        let moved = serde_json::json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "team-a"},
            "spec": {"namespaces": ["shop"]}
        });
        table.ingest(&keys, &tenants(), &put(format!("{}team-a", tenants()), moved));
        assert_eq!(table.lookup("web.shop.a.example", None), Lookup::Refused, "its domain was taken off");
        assert_eq!(table.revision, 2);
    }

    #[tokio::test]
    async fn answers_are_authoritative_and_unknown_names_are_nxdomain_with_the_soa() {
        let table = table(&[(record("shop", "web", "web-1", "a1", "10.0.0.1"), running())]);
        let shared = Shared {
            table: RwLock::new(table),
            options: DnsOptions { cluster_domain: None, ttl: 5 },
            hosts: Mutex::default(),
        };
        let ask = |name: &str, kind: RecordType| {
            let mut message = Message::query();
            message.add_query(hickory_proto::op::Query::query(Name::from_ascii(name).unwrap(), kind));
            message
        };
        let answer = shared.respond(&ask("WEB.shop.a.example.", RecordType::A)).await.unwrap();
        assert!(answer.metadata.authoritative);
        assert_eq!(answer.answers.len(), 1);
        assert_eq!(answer.answers[0].data, RData::A(A("10.0.0.1".parse().unwrap())));
        let srv = shared.respond(&ask("_http._tcp.web.shop.a.example.", RecordType::SRV)).await.unwrap();
        assert_eq!(srv.answers.len(), 1);
        assert_eq!(srv.additionals.len(), 1, "the target's address goes along");
        let missing = shared.respond(&ask("db.shop.a.example.", RecordType::A)).await.unwrap();
        assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
        assert!(matches!(missing.authorities[0].data, RData::SOA(_)));
        let elsewhere = shared.respond(&ask("example.com.", RecordType::A)).await.unwrap();
        assert_eq!(elsewhere.metadata.response_code, ResponseCode::Refused);
        let nodata = shared.respond(&ask("web.shop.a.example.", RecordType::AAAA)).await.unwrap();
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty() && !nodata.authorities.is_empty());
    }
}
