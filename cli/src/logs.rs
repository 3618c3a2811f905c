//! `baton logs` and `kubectl baton logs`: an instance's output, read through the API server
//! (which reads it from the instance's agent), as `kubectl logs` reads a pod's.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The instance (kubectl get instances lists them).
    instance: String,
    /// Its namespace (default: the kubeconfig context's, else default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Keep printing what it writes, until it ends (or Ctrl-C).
    #[arg(short = 'f', long)]
    follow: bool,
    /// Its stderr instead of its stdout.
    #[arg(long)]
    stderr: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<u64>,
    /// Only what it wrote in the last DURATION (e.g. 30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    since: Option<Duration>,
    /// At most this many bytes.
    #[arg(long, value_name = "N")]
    limit_bytes: Option<u64>,
    /// The kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current one).
    #[arg(long)]
    context: Option<String>,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (e.g. 30s, 5m, 1h)"))
}

/// The API path of the instance's log, with the query the arguments ask for.
fn path(args: &LogsArgs, namespace: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("stream", if args.stderr { "Stderr" } else { "Stdout" });
    if args.follow {
        query.append_pair("follow", "true");
    }
    if let Some(tail) = args.tail {
        query.append_pair("tailLines", &tail.to_string());
    }
    if let Some(since) = args.since {
        query.append_pair("sinceSeconds", &since.as_secs().max(1).to_string());
    }
    if let Some(limit) = args.limit_bytes {
        query.append_pair("limitBytes", &limit.to_string());
    }
    format!("/apis/baton.dev/v1alpha1/namespaces/{namespace}/instances/{}/log?{}", args.instance, query.finish())
}

/// The client configuration from `--kubeconfig` (else $KUBECONFIG, ~/.kube/config) and
/// `--context`.
pub async fn kube_config(kubeconfig: Option<&std::path::Path>, context: Option<&str>) -> Result<kube::Config> {
    let options = kube::config::KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    match kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}: cannot read it", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .context("no kubeconfig: set KUBECONFIG, or give --kubeconfig (baton dev prints where its is)")
}

pub async fn run(args: LogsArgs) -> Result<()> {
    let config = kube_config(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let namespace = args.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("connecting to the API server")?;
    let request = http::Request::get(path(&args, &namespace)).body(Vec::new())?;
    let body = match client.request_stream(request).await {
        Ok(body) => body,
        Err(kube::Error::Api(status)) => {
            bail!("Error from server ({}): {}", status.reason, status.message)
        }
        Err(e) => return Err(e).context("reading the log from the API server"),
    };
    // Printed as it comes (a followed log line by line).
    use futures::AsyncReadExt;
    use tokio::io::AsyncWriteExt;
    let mut body = std::pin::pin!(body);
    let mut stdout = tokio::io::stdout();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let n = body.read(&mut buffer).await.context("reading the log")?;
        if n == 0 {
            break;
        }
        stdout.write_all(&buffer[..n]).await?;
        stdout.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        logs: LogsArgs,
    }

    #[test]
    fn the_arguments_become_the_log_query() {
        let args = Cli::parse_from(["logs", "web-1", "-f", "--stderr", "--tail", "5", "--since", "2m"]).logs;
        assert_eq!(
            path(&args, "shop"),
            "/apis/baton.dev/v1alpha1/namespaces/shop/instances/web-1/log?stream=Stderr&follow=true&tailLines=5&sinceSeconds=120"
        );
        let plain = Cli::parse_from(["logs", "web-1"]).logs;
        assert_eq!(
            path(&plain, "default"),
            "/apis/baton.dev/v1alpha1/namespaces/default/instances/web-1/log?stream=Stdout"
        );
        assert!(Cli::try_parse_from(["logs", "web-1", "--since", "soon"]).is_err());
    }
}
