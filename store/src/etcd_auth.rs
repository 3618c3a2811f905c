//! Least privilege on etcd (its role-based access control, with users named by the
//! common name of their client certificates): the platform's processes (controllers, API
//! servers) read and write Baton's keyspace; each agent reads only its own assignments and
//! writes only its own registration and statuses — as Kubernetes' NodeRestriction limits a
//! kubelet to its node. A stolen agent credential runs nothing on other agents and reads
//! none of their work.

use std::time::Duration;

use etcd_client::{Permission, UserAddOptions};

use crate::Keyspace;
use crate::etcd::EtcdStore;
use crate::{Error, Result};

/// How long one request to turn etcd's authentication on may take, and how many are made.
const AUTH_ENABLE_WAIT: Duration = Duration::from_secs(5);
const AUTH_ENABLE_ATTEMPTS: u32 = 5;

/// etcd's superuser: needed to turn authentication on, and to manage users afterwards.
pub const ROOT: &str = "root";
/// The role of the platform's processes.
pub const PLATFORM_ROLE: &str = "baton-platform";
/// The users (certificate common names) of the platform's processes: `baton`, what `baton
/// certificates` issues by default, and one per component for those who give each its own.
pub const PLATFORM_USERS: [&str; 3] = ["baton", "baton-controller", "baton-apiserver"];

/// The user (its certificate's common name) and role of agent `agent`.
pub fn agent_user(agent: &str) -> String {
    format!("baton-agent:{agent}")
}

/// One permission: a key, or every key under a prefix; read, or read and write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key: String,
    pub prefix: bool,
    pub write: bool,
}

/// What agent `agent` may reach, and nothing else: its registration (written under its
/// lease), its assignments (read), its statuses (read and written), and the token the API
/// server shows it when reading its sandboxes (read).
pub fn agent_grants(keys: &Keyspace, agent: &str) -> Vec<Grant> {
    vec![
        Grant { key: keys.agent(agent), prefix: false, write: true },
        Grant { key: keys.agent_instances(agent), prefix: true, write: false },
        Grant { key: keys.agent_statuses(agent), prefix: true, write: true },
        Grant { key: keys.agent_sandbox_token(agent), prefix: false, write: false },
    ]
}

/// What the platform's processes may reach: Baton's whole keyspace.
pub fn platform_grants(keys: &Keyspace) -> Vec<Grant> {
    vec![Grant { key: keys.root_prefix(), prefix: true, write: true }]
}

fn permission(grant: &Grant) -> Permission {
    let permission =
        if grant.write { Permission::read_write(grant.key.as_str()) } else { Permission::read(grant.key.as_str()) };
    if grant.prefix { permission.with_prefix() } else { permission }
}

fn failed(what: &str, e: etcd_client::Error) -> Error {
    Error::Backend(format!("etcd: {what}: {e}"))
}

/// Whether an error says the user or role is there already (what makes these idempotent).
fn exists(e: &etcd_client::Error) -> bool {
    e.to_string().contains("already exists")
}

impl EtcdStore {
    /// Creates `role` with `grants` (kept if there) and `user` (certificate-only, no password)
    /// with it.
    async fn ensure_user(&self, user: &str, role: &str, grants: &[Grant]) -> Result<()> {
        let mut client = self.client();
        match client.role_add(role).await {
            Ok(_) => {}
            Err(e) if exists(&e) => {}
            Err(e) => return Err(failed(&format!("adding role {role}"), e)),
        }
        for grant in grants {
            client
                .role_grant_permission(role, permission(grant))
                .await
                .map_err(|e| failed(&format!("granting {} to role {role}", grant.key), e))?;
        }
        match client.user_add(user, "", Some(UserAddOptions::new().with_no_pwd())).await {
            Ok(_) => {}
            Err(e) if exists(&e) => {}
            Err(e) => return Err(failed(&format!("adding user {user}"), e)),
        }
        client.user_grant_role(user, role).await.map_err(|e| failed(&format!("giving {user} role {role}"), e))?;
        Ok(())
    }

    /// Turns authentication on, with `root` (etcd's superuser, for administration) and the
    /// platform's users with Baton's keyspace. Run with a certificate whose common name is
    /// `root`, so the same credential manages users afterwards. Idempotent.
    pub async fn enable_auth(&self, keys: &Keyspace) -> Result<()> {
        self.ensure_user(ROOT, ROOT, &[]).await?;
        for user in PLATFORM_USERS {
            self.ensure_user(user, PLATFORM_ROLE, &platform_grants(keys)).await?;
        }
        // Bounded and asked again: once (Loop run 51) etcd applied it — every member logged
        // "Authentication enabled" — and the answer never came, so the registrar waited and
        // never served. etcd 3.4 answers a second AuthEnable with success when it is on.
        let mut client = self.client();
        for attempt in 1..=AUTH_ENABLE_ATTEMPTS {
            match tokio::time::timeout(AUTH_ENABLE_WAIT, client.auth_enable()).await {
                Ok(answer) => return answer.map(drop).map_err(|e| failed("enabling authentication", e)),
                Err(_) => tracing::warn!(
                    attempt,
                    wait = ?AUTH_ENABLE_WAIT,
                    "etcd did not answer the request to turn its authentication on; asking again"
                ),
            }
        }
        Err(Error::Backend(format!(
            "enabling authentication: etcd did not answer within {AUTH_ENABLE_WAIT:?}, {AUTH_ENABLE_ATTEMPTS} times"
        )))
    }

    /// Makes agent `agent`'s user and role ([`agent_user`]) with [`agent_grants`]. Idempotent.
    pub async fn add_agent(&self, keys: &Keyspace, agent: &str) -> Result<()> {
        let user = agent_user(agent);
        self.ensure_user(&user, &user, &agent_grants(keys, agent)).await
    }

    /// Removes agent `agent`'s user and role, so no certificate of it reaches the store any
    /// more (until it is added again). Idempotent.
    pub async fn remove_agent(&self, agent: &str) -> Result<()> {
        let user = agent_user(agent);
        let mut client = self.client();
        let gone = |e: &etcd_client::Error| e.to_string().contains("not found");
        match client.user_delete(user.as_str()).await {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(failed(&format!("deleting user {user}"), e)),
        }
        match client.role_delete(user.as_str()).await {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(failed(&format!("deleting role {user}"), e)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_reaches_its_own_keys_only() {
        let keys = Keyspace::new("/baton");
        let grants = agent_grants(&keys, "n1");
        let keys_of = |write: bool| -> Vec<(String, bool)> {
            grants.iter().filter(|g| g.write == write).map(|g| (g.key.clone(), g.prefix)).collect()
        };
        assert_eq!(
            keys_of(true),
            [("/baton/agents/n1".to_string(), false), ("/baton/status/n1/".to_string(), true)],
            "it writes its registration and statuses"
        );
        assert_eq!(
            keys_of(false),
            [("/baton/instances/n1/".to_string(), true), ("/baton/sandbox-tokens/n1".to_string(), false)],
            "it reads its assignments and its sandbox token"
        );
        // The trailing slash keeps n1 from n10's keys; the registration is one key.
        assert!(grants.iter().filter(|g| g.prefix).all(|g| g.key.ends_with("/n1/")));
        assert_eq!(agent_user("n1"), "baton-agent:n1");
        assert_eq!(platform_grants(&keys), [Grant { key: "/baton/".into(), prefix: true, write: true }]);
    }
}
