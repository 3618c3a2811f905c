//! What an agent and the registrar say when the agent joins the cluster (`baton registrar`):
//! the agent asks for a store identity of its own and gets a client certificate for it.

/// The path agents post their join requests to.
pub const JOIN_PATH: &str = "/v1/join";

/// What an agent sends (with its join token as a bearer token): its name and a PKCS #10
/// certificate signing request (PEM) made with the key it keeps.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    pub name: String,
    pub csr: String,
}

/// What the registrar answers: the agent's client certificate (PEM) for etcd, whose common
/// name is `baton-agent:NAME`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub certificate: String,
}
