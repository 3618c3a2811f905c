//! Raw requests to a Baton API server over HTTPS, as a kubeconfig describes it (server,
//! CA, token): for checking status codes and bodies that kubectl would hide.

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// A client for one API server.
#[derive(Clone)]
pub struct ApiClient {
    pub server: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// The CA the server's certificate is signed by, in PEM.
    pub ca_pem: String,
}

impl ApiClient {
    /// A client with the server, CA and token of `kubeconfig`.
    pub fn from_kubeconfig(kubeconfig: &Path) -> Self {
        let text = std::fs::read_to_string(kubeconfig).unwrap_or_else(|e| panic!("{}: {e}", kubeconfig.display()));
        let config: Value = serde_saphyr::from_str(&text).expect("a kubeconfig");
        let cluster = &config["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().expect("a server").to_string();
        let ca = base64::engine::general_purpose::STANDARD
            .decode(cluster["certificate-authority-data"].as_str().expect("a CA in the kubeconfig"))
            .expect("base64");
        let token = config["users"][0]["user"]["token"].as_str().map(str::to_string);
        Self::new(server, String::from_utf8(ca).expect("PEM"), token, None)
    }

    fn new(server: String, ca_pem: String, token: Option<String>, client_cert: Option<ClientCert>) -> Self {
        let ca = Certificate::from_pem(ca_pem.as_bytes()).expect("the CA parses");
        let tls =
            TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![ca]))).client_cert(client_cert).build();
        let agent: ureq::Agent =
            ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().into();
        Self { server, token, agent, ca_pem }
    }

    /// The same server, with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self::new(self.server.clone(), self.ca_pem.clone(), token.map(str::to_string), None)
    }

    /// The same server, authenticating with a client certificate (PEMs) and no token.
    pub fn with_client_certificate(&self, cert_pem: &str, key_pem: &str) -> Self {
        let cert = Certificate::from_pem(cert_pem.as_bytes()).expect("the certificate parses");
        let key = PrivateKey::from_pem(key_pem.as_bytes()).expect("the key parses");
        Self::new(self.server.clone(), self.ca_pem.clone(), None, Some(ClientCert::new_with_certs(&[cert], key)))
    }

    /// `method path` with an optional body and content type: (status, body).
    pub fn call(&self, method: &str, path: &str, content_type: &str, body: Option<&str>) -> (u16, String) {
        self.call_with_headers(method, path, content_type, body, &[])
    }

    /// `GET path` with more `headers` (e.g. a front proxy's `X-Remote-User`).
    pub fn get_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        self.call_with_headers("GET", path, "application/json", None, headers)
    }

    fn call_with_headers(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let url = format!("{}{path}", self.server);
        let mut request = ureq::http::Request::builder().method(method).uri(&url).header("Content-Type", content_type);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        };
        let result = match body {
            Some(body) => self.agent.run(request.body(body.to_string()).expect("a request")),
            None => self.agent.run(request.body(()).expect("a request")),
        };
        match result {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let text =
                    response.body_mut().with_config().limit(64 * 1024 * 1024).read_to_string().unwrap_or_default();
                (status, text)
            }
            Err(e) => panic!("{method} {url}: {e}"),
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.call("GET", path, "application/json", None)
    }

    /// GET, parsed as JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    pub fn post_json(&self, path: &str, body: &str) -> (u16, String) {
        self.call("POST", path, "application/json", Some(body))
    }
}
