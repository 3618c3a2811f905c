//! The registrar: gives each agent that joins a store identity of its own, as Kubernetes'
//! TLS bootstrapping gives each kubelet a certificate of its own node.
//!
//! An agent shows a join token (shared by the agents of a cluster, as a kubelet's bootstrap
//! token is) and a certificate signing request for its name. The registrar checks the token,
//! records which key claimed that name — the first claim wins: a later join for the name must
//! come from the same key, so the token does not let anyone take over an agent that joined —
//! makes the agent's etcd user and role (its own keys only, [`etcd_auth::agent_grants`]), and
//! signs a client certificate for it (`baton-agent:NAME`) with etcd's CA. The agent keeps
//! its key on its machine; the key never travels.
//!
//! The registrar holds etcd's CA key and acts as etcd's `root`: run it where only the
//! platform's operators reach its machine, and give the join token only to agents' machines.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use baton_api::join::{JOIN_PATH, JoinRequest, JoinResponse};
use baton_store::etcd::EtcdStore;
use baton_store::etcd_auth;
use baton_store::{Compare, Keyspace, Op, OpResponse, Txn};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use sha2::{Digest, Sha256};

/// The shortest join token the registrar takes: a shorter one could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;
/// The largest join request read (a CSR is about 0.5 KiB).
pub const MAX_REQUEST_BYTES: usize = 64 << 10;
/// The record of which key claimed an agent's name (`<prefix>/agent-identities/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// `sha256:<hex>` of the claiming key's public key.
    pub public_key: String,
    /// When the name was first claimed (RFC 3339).
    pub claimed: String,
}

/// Why a join was refused, or could not be done now.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("no join token, or not one of the registrar's (give the agent --join-token-file with the cluster's token)")]
    Unauthorized,
    #[error("{0}")]
    Invalid(String),
    #[error(
        "agent {name} joined before with another key (since {since}); if its machine was rebuilt, free the name \
         with `baton store remove-agent {name}` and start the agent again"
    )]
    Claimed { name: String, since: String },
    #[error("the store: {0}")]
    Store(String),
}

impl IntoResponse for JoinError {
    fn into_response(self) -> Response {
        let status = match &self {
            JoinError::Unauthorized => StatusCode::UNAUTHORIZED,
            JoinError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            JoinError::Claimed { .. } => StatusCode::CONFLICT,
            JoinError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.to_string()).into_response()
    }
}

/// The registrar's state: the store (as etcd's `root`), the tokens it takes, and the CA it
/// signs with.
pub struct Registrar {
    store: EtcdStore,
    keys: Keyspace,
    tokens: Vec<String>,
    signer: Signer,
}

/// Signs agents' client certificates with a CA.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own expiry: no certificate it signs outlives it.
    not_after: jiff::Timestamp,
}

impl Signer {
    /// The CA from its certificate and key (PEM).
    pub fn new(ca_cert_pem: &str, ca_key_pem: &str) -> Result<Self, String> {
        let key = crate::tls::ca_key(ca_key_pem).map_err(|e| format!("the CA's key: {e}"))?;
        let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, key).map_err(|e| format!("the CA's certificate: {e}"))?;
        let not_after = not_after(ca_cert_pem)?;
        Ok(Signer { issuer, not_after })
    }

    /// A client certificate for agent `name` on the public key of `csr` (whose signature
    /// proves the agent holds the key), and the key's fingerprint. Nothing else the request
    /// asks for is taken: the name, uses and lifetime are the registrar's.
    pub fn sign(&self, name: &str, csr: &str) -> Result<(String, String), JoinError> {
        let request = CertificateSigningRequestParams::from_pem(csr).map_err(|e| {
            JoinError::Invalid(format!("csr: not a certificate signing request signed by its key: {e}"))
        })?;
        let fingerprint = fingerprint(request.public_key.der_bytes());
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| JoinError::Invalid(e.to_string()))?;
        params.distinguished_name.push(DnType::CommonName, etcd_auth::agent_user(name));
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        expire_at(&mut params, self.not_after);
        let signed = CertificateSigningRequestParams { params, public_key: request.public_key };
        let certificate = signed.signed_by(&self.issuer).map_err(|e| JoinError::Invalid(format!("csr: {e}")))?;
        Ok((certificate.pem(), fingerprint))
    }

    /// A certificate and key for a server reached at `names` (host names or IP addresses),
    /// signed by the CA: what the registrar shows agents, who trust etcd's CA.
    pub fn server_certificate(&self, names: &[String]) -> Result<(String, String), String> {
        self.issue("baton-registrar", names, ExtendedKeyUsagePurpose::ServerAuth).map_err(|e| format!("--san: {e}"))
    }

    /// A client certificate for etcd's `root`, kept in memory: how the registrar manages
    /// etcd's users and roles.
    pub fn root_certificate(&self) -> Result<(String, String), String> {
        self.issue(etcd_auth::ROOT, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A new key and a certificate for it, `common_name` for `names` and `usage`, until the
    /// CA's expiry: (certificate, key) PEM.
    fn issue(
        &self,
        common_name: &str,
        names: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<(String, String), String> {
        let mut params = CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![usage];
        expire_at(&mut params, self.not_after);
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// `sha256:<hex>` of a public key.
fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A certificate's expiry (PEM).
fn not_after(pem: &str) -> Result<jiff::Timestamp, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("the CA's certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("the CA's certificate: {e}"))?;
    jiff::Timestamp::from_second(cert.validity().not_after.timestamp()).map_err(|e| e.to_string())
}

/// Makes `params` expire on the day of `at` (UTC).
fn expire_at(params: &mut CertificateParams, at: jiff::Timestamp) {
    let date = at.to_zoned(jiff::tz::TimeZone::UTC).date();
    params.not_after = rcgen::date_time_ymd(date.year().into(), date.month() as u8, date.day() as u8);
}

/// The lines of a tokens file that hold a token: blank lines and `#` comments aside.
pub fn token_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The join tokens in a tokens file: one per line; blank lines and `#` comments skipped.
/// Several let a token be rotated (add the new one, move the agents, remove the old).
pub fn parse_tokens(text: &str) -> Result<Vec<String>, String> {
    let tokens: Vec<String> = token_lines(text).map(String::from).collect();
    if tokens.is_empty() {
        return Err("no token in it (one per line)".into());
    }
    if let Some((line, _)) = tokens.iter().enumerate().find(|(_, t)| t.len() < MIN_TOKEN_LEN) {
        return Err(format!("token {} is shorter than {MIN_TOKEN_LEN} characters", line + 1));
    }
    Ok(tokens)
}

impl Registrar {
    pub fn new(store: EtcdStore, keys: Keyspace, tokens: Vec<String>, signer: Signer) -> Self {
        Registrar { store, keys, tokens, signer }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(presented) =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        // Every token is compared, so the time taken does not say which one came close.
        self.tokens
            .iter()
            .fold(false, |found, t| crate::auth::constant_time_eq(t.as_bytes(), presented.as_bytes()) | found)
    }

    /// Claims `name` for the key with `fingerprint`, unless another key claimed it first.
    async fn claim(&self, name: &str, fingerprint: &str) -> Result<(), JoinError> {
        let key = self.keys.agent_identity(name);
        let claim = Claim { public_key: fingerprint.to_string(), claimed: jiff::Timestamp::now().to_string() };
        let value = serde_json::to_vec(&claim).map_err(|e| JoinError::Store(e.to_string()))?;
        let txn = Txn::new()
            .when([Compare::absent(key.clone())])
            .and_then([Op::put(key.clone(), value)])
            .or_else([Op::get(key.clone())]);
        let response = baton_store::Store::txn(&self.store, txn).await.map_err(|e| JoinError::Store(e.to_string()))?;
        if response.succeeded {
            tracing::info!(agent = name, key = fingerprint, "an agent claimed its name");
            return Ok(());
        }
        let earlier = response.responses.into_iter().find_map(|r| match r {
            OpResponse::Get(Some(kv)) => serde_json::from_slice::<Claim>(&kv.value).ok(),
            _ => None,
        });
        match earlier {
            Some(earlier) if earlier.public_key == fingerprint => Ok(()),
            Some(earlier) => Err(JoinError::Claimed { name: name.to_string(), since: earlier.claimed }),
            None => Err(JoinError::Store(format!("{key}: not a claim this registrar can read"))),
        }
    }

    /// Handles one join: token, name, request; claim; etcd user and role; certificate.
    pub async fn join(&self, headers: &HeaderMap, request: JoinRequest) -> Result<JoinResponse, JoinError> {
        if !self.authorized(headers) {
            return Err(JoinError::Unauthorized);
        }
        if let Some(problem) = baton_api::names::dns_subdomain_problem(&request.name) {
            return Err(JoinError::Invalid(format!("name {:?}: {problem}", request.name)));
        }
        let (certificate, fingerprint) = self.signer.sign(&request.name, &request.csr)?;
        self.claim(&request.name, &fingerprint).await?;
        self.store.add_agent(&self.keys, &request.name).await.map_err(|e| JoinError::Store(e.to_string()))?;
        tracing::info!(agent = %request.name, "issued an agent its store identity");
        Ok(JoinResponse { certificate })
    }
}

/// The registrar's HTTP routes: `POST /v1/join`.
pub fn router(registrar: Arc<Registrar>) -> axum::Router {
    async fn join(
        State(registrar): State<Arc<Registrar>>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Result<Json<JoinResponse>, JoinError> {
        let request: JoinRequest = serde_json::from_slice(&body)
            .map_err(|e| JoinError::Invalid(format!("the request: {e} (send {{\"name\": …, \"csr\": …}})")))?;
        registrar.join(&headers, request).await.map(Json)
    }
    axum::Router::new()
        .route(JOIN_PATH, axum::routing::post(join))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(registrar)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "test-ca");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_after = rcgen::date_time_ymd(2035, 6, 1);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn csr(key: &KeyPair, cn: &str) -> String {
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn an_agent_gets_a_client_certificate_of_its_name_on_its_own_key_and_nothing_it_asked_for() {
        let (ca_cert, ca_key) = ca();
        let signer = Signer::new(&ca_cert, &ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        // The request asks for root and a server name: it gets neither.
        let (pem, fingerprint) = signer.sign("n1", &csr(&key, "root")).unwrap();
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn: Vec<_> = cert.subject().iter_common_name().map(|c| c.as_str().unwrap().to_string()).collect();
        assert_eq!(cn, ["baton-agent:n1"]);
        assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw(), "the agent's own key");
        assert!(cert.subject_alternative_name().unwrap().is_none(), "no names it asked for");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!cert.is_ca());
        assert_eq!(cert.validity().not_after.timestamp(), signer.not_after.as_second(), "as long as the CA");
        assert_eq!(fingerprint, super::fingerprint(key.public_key_raw()));
        // The same key again: the same fingerprint; another key: another.
        assert_eq!(signer.sign("n1", &csr(&key, "x")).unwrap().1, fingerprint);
        let other = KeyPair::generate().unwrap();
        assert_ne!(signer.sign("n1", &csr(&other, "x")).unwrap().1, fingerprint);
    }

    /// Helm's `genCA` (and `openssl genrsa -traditional`) writes the CA's key as PKCS #1.
    #[test]
    fn a_ca_with_an_rsa_pkcs1_key_signs() {
        let signer =
            Signer::new(include_str!("../testdata/pkcs1-ca.crt"), include_str!("../testdata/pkcs1-ca.key")).unwrap();
        let key = KeyPair::generate().unwrap();
        let (pem, _) = signer.sign("n1", &csr(&key, "n1")).unwrap();
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = CertificateDer::from_pem_slice(include_bytes!("../testdata/pkcs1-ca.crt")).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca.public_key())).expect("signed by the CA's key");
        assert!(
            Signer::new(
                include_str!("../testdata/pkcs1-ca.crt"),
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
            )
            .is_err()
        );
    }

    #[test]
    fn a_request_not_signed_by_its_key_is_refused() {
        let (ca_cert, ca_key) = ca();
        let signer = Signer::new(&ca_cert, &ca_key).unwrap();
        let good = csr(&KeyPair::generate().unwrap(), "x");
        // Flip a byte of the signature (the end of the DER).
        use base64::Engine;
        let body: String = good.lines().filter(|l| !l.starts_with("-----")).collect();
        let mut der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
        let last = der.len() - 1;
        der[last] ^= 0xff;
        let bad = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        for (csr, why) in [(bad.as_str(), "a bad signature"), ("hello", "not PEM"), ("", "empty")] {
            match signer.sign("n1", csr) {
                Err(JoinError::Invalid(message)) => assert!(message.starts_with("csr: "), "{why}: {message}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn tokens_files_refuse_short_or_no_tokens() {
        assert_eq!(
            parse_tokens("# the cluster's\nabcdefghijklmnop\n\n0123456789abcdef0\n").unwrap(),
            ["abcdefghijklmnop", "0123456789abcdef0"]
        );
        assert_eq!(parse_tokens("# none\n\n").unwrap_err(), "no token in it (one per line)");
        assert_eq!(parse_tokens("abcdefghijklmnop\nshort\n").unwrap_err(), "token 2 is shorter than 16 characters");
    }
}
