//! TLS for the API server: a certificate authority and a server certificate it signs,
//! generated in the data dir on first start (kept across restarts), and the rustls server
//! configuration that accepts — but does not require — client certificates from a CA.
//!
//! A client certificate that does not chain to that CA does not fail the handshake: the
//! connection is made (the client still proves it holds the certificate's key), and every
//! request on it is answered with a 401 Status saying why — so kubectl and kube-rs show a
//! Kubernetes error instead of a TLS reset.
//!
//! The CA and the server certificate are separate because rustls (and so kube-rs) refuses a
//! self-signed certificate that is its own CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

/// TLS errors; each names the file or the input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(String),
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::File { path: path.display().to_string(), message: e.to_string() })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<()> {
    let failed = |e: std::io::Error| Error::File { path: path.display().to_string(), message: e.to_string() };
    std::fs::write(path, contents).map_err(failed)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    }
    Ok(())
}

/// The files of a generated PKI in a data dir.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl Pki {
    pub fn in_dir(dir: &Path) -> Self {
        Pki {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        }
    }

    /// The CA, in PEM.
    pub fn ca_pem(&self) -> Result<String> {
        read(&self.ca_cert)
    }

    /// Makes the CA if missing, and a server certificate for `names` (host names and IP
    /// addresses) if missing or not covering them all.
    pub fn ensure(&self, names: &[String]) -> Result<()> {
        if !self.ca_cert.exists() || !self.ca_key.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(DnType::CommonName, "baton-ca");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
            let cert = params.self_signed(&key)?;
            write(&self.ca_key, &key.serialize_pem(), true)?;
            write(&self.ca_cert, &cert.pem(), false)?;
            // A new CA invalidates any server certificate.
            let _ = std::fs::remove_file(&self.server_cert);
        }
        if self.server_cert.exists() && self.server_key.exists() && covers(&read(&self.server_cert)?, names) {
            return Ok(());
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "baton-apiserver");
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
            })
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        write(&self.server_key, &key.serialize_pem(), true)?;
        write(&self.server_cert, &cert.pem(), false)?;
        Ok(())
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let key = ca_key(&read(&self.ca_key)?)
            .map_err(|message| Error::File { path: self.ca_key.display().to_string(), message })?;
        Ok(Issuer::from_ca_cert_pem(&read(&self.ca_cert)?, key)?)
    }

    /// A client certificate for `user` (its CN), in `group` (its O, as Kubernetes reads
    /// them), signed by the CA: `(certificate PEM, key PEM)`. (rcgen writes one O per
    /// name; certificates from other CAs may name several groups, one O each, and the
    /// server reads them all.)
    pub fn client_certificate(&self, user: &str, group: Option<&str>) -> Result<(String, String)> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(group) = group {
            params.distinguished_name.push(DnType::OrganizationName, group);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A CA's key from PEM: PKCS #8, or PKCS #1 (an RSA key as Helm's `genCA` and OpenSSL
/// write it), which is wrapped in PKCS #8 for the signer.
pub fn ca_key(pem: &str) -> Result<KeyPair, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())?;
    let pkcs8 = match der {
        PrivateKeyDer::Pkcs8(pkcs8) => pkcs8,
        PrivateKeyDer::Pkcs1(pkcs1) => {
            // PrivateKeyInfo { version 0, rsaEncryption with NULL parameters, the RSA key }.
            let rsa_encryption = yasna::models::ObjectIdentifier::from_slice(&[1, 2, 840, 113_549, 1, 1, 1]);
            let wrapped = yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    w.next().write_u8(0);
                    w.next().write_sequence(|w| {
                        w.next().write_oid(&rsa_encryption);
                        w.next().write_null();
                    });
                    w.next().write_bytes(pkcs1.secret_pkcs1_der());
                })
            });
            PrivatePkcs8KeyDer::from(wrapped)
        }
        _ => {
            return Err("give it as PKCS #8 or PKCS #1 (openssl pkcs8 -topk8 -nocrypt converts it)".into());
        }
    };
    KeyPair::try_from(&PrivateKeyDer::Pkcs8(pkcs8)).map_err(|e| e.to_string())
}

/// Whether a PEM certificate names every one of `names` in its subject alternative names.
fn covers(pem: &str, names: &[String]) -> bool {
    let Ok(der) = CertificateDer::from_pem_slice(pem.as_bytes()) else { return false };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else { return false };
    let Ok(Some(sans)) = cert.subject_alternative_name() else { return false };
    let have: Vec<String> = sans
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    names.iter().all(|n| have.iter().any(|h| h == n))
}

/// The server's TLS: its rustls configuration, and the check of client certificates made
/// once the handshake is done.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
    front_proxy: Option<(Arc<dyn ClientCertVerifier>, FrontProxy)>,
}

/// A front proxy — kube-apiserver's aggregation layer — that authenticates users itself and
/// names them in request headers, shown by a client certificate of its own CA (Kubernetes'
/// `--requestheader-*` flags; the ConfigMap kube-system/extension-apiserver-authentication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontProxy {
    /// Its CA (PEM): only a certificate it signed makes the headers count.
    pub ca_pem: String,
    /// The common names its certificate may have; empty: any.
    pub allowed_names: Vec<String>,
    /// The headers naming the user (the first present counts), e.g. `X-Remote-User`.
    pub username_headers: Vec<String>,
    /// The headers naming the user's groups (every value of each), e.g. `X-Remote-Group`.
    pub group_headers: Vec<String>,
}

impl FrontProxy {
    /// Kubernetes' header names.
    pub fn new(ca_pem: String, allowed_names: Vec<String>) -> Self {
        FrontProxy {
            ca_pem,
            allowed_names,
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
        }
    }

    /// The front proxy Kubernetes describes in the ConfigMap
    /// kube-system/extension-apiserver-authentication (its `data`): the CA, and JSON lists of
    /// the allowed names and the headers.
    pub fn from_configmap(data: &std::collections::BTreeMap<String, String>) -> std::result::Result<Self, String> {
        let ca_pem = data
            .get("requestheader-client-ca-file")
            .filter(|ca| !ca.trim().is_empty())
            .ok_or("it has no requestheader-client-ca-file: is the API server's aggregation layer configured?")?;
        let list = |key: &str| -> std::result::Result<Vec<String>, String> {
            match data.get(key) {
                None => Ok(Vec::new()),
                Some(text) => serde_json::from_str(text).map_err(|e| format!("{key}: {e}")),
            }
        };
        let mut proxy = FrontProxy::new(ca_pem.clone(), list("requestheader-allowed-names")?);
        let (users, groups) = (list("requestheader-username-headers")?, list("requestheader-group-headers")?);
        if !users.is_empty() {
            proxy.username_headers = users;
        }
        if !groups.is_empty() {
            proxy.group_headers = groups;
        }
        Ok(proxy)
    }

    /// The user and groups the proxy names in `headers`; `None` when it names no user.
    pub fn identity(&self, headers: &http::HeaderMap) -> Option<(String, Vec<String>)> {
        let user = self
            .username_headers
            .iter()
            .find_map(|h| headers.get(h.as_str()).and_then(|v| v.to_str().ok()))
            .filter(|u| !u.is_empty())?
            .to_string();
        let groups = self
            .group_headers
            .iter()
            .flat_map(|h| headers.get_all(h.as_str()).iter())
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect();
        Some((user, groups))
    }
}

/// What a connection's client certificate says about its user.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientIdentity {
    /// No certificate.
    None,
    /// Signed by the client CA: the user (CN) and groups (O).
    Verified { user: String, groups: Vec<String> },
    /// Not accepted, and why.
    Rejected(String),
    /// The front proxy's: each request names its user in the proxy's headers.
    FrontProxy(FrontProxy),
}

impl ServerTls {
    /// Checks a connection's client certificate chain against the front proxy's CA, then the
    /// client CA.
    pub fn identify(&self, chain: Option<&[CertificateDer<'_>]>) -> ClientIdentity {
        let Some((end_entity, intermediates)) = chain.and_then(<[_]>::split_first) else {
            return ClientIdentity::None;
        };
        if let Some((verifier, proxy)) = &self.front_proxy
            && verifier.verify_client_cert(end_entity, intermediates, rustls::pki_types::UnixTime::now()).is_ok()
        {
            let name = certificate_identity(end_entity).map(|(user, _)| user).unwrap_or_default();
            if proxy.allowed_names.is_empty() || proxy.allowed_names.contains(&name) {
                return ClientIdentity::FrontProxy(proxy.clone());
            }
            return ClientIdentity::Rejected(format!(
                "the front proxy's certificate names {name:?}, not one of {:?} (--requestheader-allowed-names)",
                proxy.allowed_names
            ));
        }
        let Some(verifier) = &self.clients else {
            return ClientIdentity::Rejected("this server accepts no client certificates".into());
        };
        if let Err(e) = verifier.verify_client_cert(end_entity, intermediates, rustls::pki_types::UnixTime::now()) {
            return ClientIdentity::Rejected(format!("the client certificate is not accepted: {e}"));
        }
        match certificate_identity(end_entity) {
            Some((user, groups)) => ClientIdentity::Verified { user, groups },
            None => ClientIdentity::Rejected("the client certificate names no user (no CN)".into()),
        }
    }
}

/// Completes the handshake with any client certificate whose key the client holds; whether
/// it chains to the client CA (or the front proxy's) is checked after
/// ([`ServerTls::identify`]). The CAs named to clients are both: a Go client (kube-apiserver)
/// sends its certificate only when its CA is named.
#[derive(Debug)]
struct CheckedLater(Arc<dyn ClientCertVerifier>, Vec<rustls::DistinguishedName>);

impl ClientCertVerifier for CheckedLater {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.1
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A client verifier for the CAs in `pem`, which `source` names in errors.
fn verifier_of(
    pem: &[u8],
    source: &str,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    let failed = |message: String| Error::File { path: source.to_string(), message };
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pem) {
        roots.add(ca.map_err(|e| failed(e.to_string()))?).map_err(|e| failed(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(failed("no certificate in it".into()));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::Config(e.to_string()))
}

/// The TLS configuration: serve `cert`/`key` (PEM files), accept client certificates
/// signed by `client_ca` (PEM file) — or by the `front_proxy`'s CA — without requiring one.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    front_proxy: Option<&FrontProxy>,
) -> Result<ServerTls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| Error::File { path: cert.display().to_string(), message: e.to_string() })?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::File { path: cert.display().to_string(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(Error::File { path: cert.display().to_string(), message: "no certificate in it".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::File { path: key.display().to_string(), message: e.to_string() })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?;
    let clients = match client_ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| Error::File { path: path.display().to_string(), message: e.to_string() })?;
            Some(verifier_of(&pem, &path.display().to_string(), &provider)?)
        }
        None => None,
    };
    let front_proxy = match front_proxy {
        Some(proxy) => {
            let verifier = verifier_of(proxy.ca_pem.as_bytes(), "the front proxy's CA", &provider)?;
            Some((verifier, proxy.clone()))
        }
        None => None,
    };
    let verifiers: Vec<&Arc<dyn ClientCertVerifier>> =
        clients.iter().chain(front_proxy.iter().map(|(verifier, _)| verifier)).collect();
    let builder = match verifiers.first() {
        Some(&first) => {
            let hints = verifiers.iter().flat_map(|v| v.root_hint_subjects().iter().cloned()).collect();
            builder.with_client_cert_verifier(Arc::new(CheckedLater(first.clone(), hints)))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| Error::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls { config: Arc::new(config), clients, front_proxy })
}

/// The user (CN) and groups (O) a client certificate names.
pub fn certificate_identity(der: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Some((user, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_cover_their_names_and_identify_clients() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::in_dir(dir.path());
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        pki.ensure(&names).unwrap();
        let first = read(&pki.server_cert).unwrap();
        assert!(covers(&first, &names));
        pki.ensure(&names).unwrap();
        assert_eq!(read(&pki.server_cert).unwrap(), first, "kept when it still covers the names");
        let more = vec!["127.0.0.1".to_string(), "10.1.2.3".to_string()];
        pki.ensure(&more).unwrap();
        assert!(covers(&read(&pki.server_cert).unwrap(), &more), "reissued for a new address");
        server_config(&pki.server_cert, &pki.server_key, Some(&pki.ca_cert), None).unwrap();

        let (cert, _) = pki.client_certificate("alice", Some("team-a")).unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(certificate_identity(&der), Some(("alice".into(), vec!["team-a".into()])));
    }

    #[test]
    fn the_front_proxy_as_kubernetes_describes_it() {
        let data: std::collections::BTreeMap<String, String> = [
            ("requestheader-client-ca-file", "-----BEGIN CERTIFICATE-----\n"),
            ("requestheader-allowed-names", "[\"front-proxy-client\"]"),
            ("requestheader-username-headers", "[\"X-Remote-User\"]"),
            ("requestheader-group-headers", "[\"X-Remote-Group\"]"),
            ("requestheader-extra-headers-prefix", "[\"X-Remote-Extra-\"]"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let proxy = FrontProxy::from_configmap(&data).unwrap();
        assert_eq!(proxy.allowed_names, ["front-proxy-client"]);
        assert_eq!(
            (proxy.username_headers.as_slice(), proxy.group_headers.as_slice()),
            (&["X-Remote-User".to_string()][..], &["X-Remote-Group".to_string()][..])
        );
        let mut headers = http::HeaderMap::new();
        headers.insert("x-remote-user", "alice".parse().unwrap());
        headers.append("x-remote-group", "dev".parse().unwrap());
        headers.append("x-remote-group", "system:authenticated".parse().unwrap());
        assert_eq!(proxy.identity(&headers), Some(("alice".into(), vec!["dev".into(), "system:authenticated".into()])));
        headers.remove("x-remote-user");
        assert_eq!(proxy.identity(&headers), None, "no user, no identity");
        let mut broken = data.clone();
        broken.insert("requestheader-allowed-names".into(), "front-proxy-client".into());
        assert!(FrontProxy::from_configmap(&broken).unwrap_err().starts_with("requestheader-allowed-names: "));
        broken.remove("requestheader-client-ca-file");
        assert!(FrontProxy::from_configmap(&broken).unwrap_err().contains("aggregation layer"));
    }
}
