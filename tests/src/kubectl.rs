//! The real kubectl, against one cluster, with its own cache directory.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub struct Kubectl {
    pub kubeconfig: PathBuf,
    /// A HOME of its own, so kubectl's discovery cache is this cluster's only.
    pub home: PathBuf,
}

impl Kubectl {
    pub fn run(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs (is it on PATH?)");
        if let Some(input) = input {
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("writing kubectl's input");
        }
        child.wait_with_output().expect("kubectl's output")
    }

    /// Runs kubectl and returns its stdout, or the error with kubectl's stderr.
    pub fn ok(&self, args: &[&str], input: Option<&str>) -> Result<String, String> {
        let output = self.run(args, input);
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!("kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// `kubectl … -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<Value, String> {
        let mut full = args.to_vec();
        full.extend(["-o", "json"]);
        let out = self.ok(&full, None)?;
        serde_json::from_str(&out).map_err(|e| format!("kubectl {} printed no JSON: {e}", args.join(" ")))
    }
}
