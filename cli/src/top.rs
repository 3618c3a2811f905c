//! `kubectl baton top`: what each running instance uses — cpu (now, and its time so far),
//! memory and disk, as its agent last measured them from its cgroup and sandbox — as
//! `kubectl top pods` shows pods.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// Only instances with these labels (e.g. app=web).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// The namespace (default: the kubeconfig context's, else default).
    #[arg(short = 'n', long, conflicts_with = "all_namespaces")]
    namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Order by cpu or memory, the most first (default: by namespace and name).
    #[arg(long, value_parser = ["cpu", "memory"])]
    sort_by: Option<String>,
    /// The kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current one).
    #[arg(long)]
    context: Option<String>,
}

/// One row: namespace, name, app, agent, cpu (millicpus), memory (bytes), disk.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    namespace: String,
    name: String,
    app: String,
    agent: String,
    cpu: Option<String>,
    memory: Option<String>,
    disk: Option<String>,
    /// CPU time since it started, `12.3s`.
    cpu_time: Option<String>,
}

impl Row {
    fn of(item: &Value) -> Option<Row> {
        if item.pointer("/status/phase")?.as_str()? != "Running" {
            return None;
        }
        let text = |pointer: &str| item.pointer(pointer).and_then(Value::as_str).map(str::to_string);
        Some(Row {
            namespace: text("/metadata/namespace").unwrap_or_default(),
            name: text("/metadata/name")?,
            app: text("/spec/app").unwrap_or_default(),
            agent: text("/spec/agent").unwrap_or_default(),
            cpu: text("/status/usage/cpu"),
            memory: text("/status/usage/memory"),
            disk: text("/status/usage/disk"),
            cpu_time: item
                .pointer("/status/usage/cpuMillis")
                .and_then(Value::as_u64)
                .map(baton_api::instance::cpu_time_text),
        })
    }
}

/// A quantity's size for ordering: `250m` → 250, `45Mi` → 45·2²⁰.
fn magnitude(quantity: Option<&str>) -> u128 {
    let Some(q) = quantity else { return 0 };
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let number: u128 = q[..split].parse().unwrap_or(0);
    let factor: u128 = match &q[split..] {
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => 1,
    };
    number * factor
}

fn table(mut rows: Vec<Row>, sort_by: Option<&str>, with_namespace: bool) -> String {
    match sort_by {
        Some("cpu") => rows.sort_by_key(|r| std::cmp::Reverse(magnitude(r.cpu.as_deref()))),
        Some("memory") => rows.sort_by_key(|r| std::cmp::Reverse(magnitude(r.memory.as_deref()))),
        _ => rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))),
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut lines: Vec<Vec<String>> = vec![
        ["NAMESPACE", "NAME", "APP", "AGENT", "CPU(cores)", "MEMORY(bytes)", "DISK(bytes)", "CPU-TIME"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    ];
    for r in &rows {
        lines.push(vec![
            r.namespace.clone(),
            r.name.clone(),
            r.app.clone(),
            r.agent.clone(),
            dash(&r.cpu),
            dash(&r.memory),
            dash(&r.disk),
            dash(&r.cpu_time),
        ]);
    }
    if !with_namespace {
        for line in &mut lines {
            line.remove(0);
        }
    }
    let widths: Vec<usize> =
        (0..lines[0].len()).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

pub async fn run(args: TopArgs) -> Result<()> {
    let config = crate::logs::kube_config(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("connecting to the API server")?;
    let mut path = if args.all_namespaces {
        "/apis/baton.dev/v1alpha1/instances".to_string()
    } else {
        format!("/apis/baton.dev/v1alpha1/namespaces/{namespace}/instances")
    };
    if let Some(selector) = &args.selector {
        let query = form_urlencoded::Serializer::new(String::new()).append_pair("labelSelector", selector).finish();
        path = format!("{path}?{query}");
    }
    let request = http::Request::get(path).body(Vec::new())?;
    let list: Value = match client.request(request).await {
        Ok(list) => list,
        Err(kube::Error::Api(status)) => bail!("Error from server ({}): {}", status.reason, status.message),
        Err(e) => return Err(e).context("listing instances"),
    };
    let rows: Vec<Row> =
        list["items"].as_array().map(|items| items.iter().filter_map(Row::of).collect()).unwrap_or_default();
    if rows.is_empty() {
        let place = if args.all_namespaces { "any namespace".to_string() } else { format!("{namespace} namespace") };
        eprintln!("No running instances found in {place}.");
        return Ok(());
    }
    print!("{}", table(rows, args.sort_by.as_deref(), args.all_namespaces));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, phase: &str, cpu: Option<&str>, memory: Option<&str>) -> Value {
        serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"app": "web", "agent": "agent-1"},
            "status": {"phase": phase, "usage": {"cpu": cpu, "memory": memory, "cpuMillis": 12345}},
        })
    }

    #[test]
    fn running_instances_are_listed_by_what_they_use() {
        let items = [
            instance("web-a", "Running", Some("5m"), Some("12Mi")),
            instance("web-b", "Running", Some("250m"), Some("900Ki")),
            instance("web-c", "Failed", Some("1m"), Some("1Mi")),
            instance("web-d", "Running", None, None),
        ];
        let rows: Vec<Row> = items.iter().filter_map(Row::of).collect();
        assert_eq!(rows.len(), 3, "only running instances");
        let by_cpu = table(rows.clone(), Some("cpu"), false);
        let lines: Vec<&str> = by_cpu.lines().collect();
        assert!(lines[0].starts_with("NAME") && lines[0].contains("CPU(cores)   MEMORY(bytes)"), "{by_cpu}");
        assert!(lines[1].starts_with("web-b") && lines[1].contains("250m"), "{by_cpu}");
        assert!(lines[1].ends_with("12.3s"), "cpu time in seconds: {by_cpu}");
        assert!(lines[3].starts_with("web-d") && lines[3].contains(" -"), "unmeasured shows -: {by_cpu}");
        let by_memory = table(rows, Some("memory"), true);
        assert!(by_memory.lines().nth(1).unwrap().starts_with("default     web-a"), "{by_memory}");
    }
}
