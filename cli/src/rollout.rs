//! `baton rollout status app/NAME`: waits until the app's deployment is done, printing its
//! progress as it changes, as `kubectl rollout status` does for a Deployment: exit 0 once every
//! instance runs the current version and is healthy, 1 when it fails or the time runs out.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use baton_api::App;
use baton_api::app::CONDITION_PROGRESSING;

#[derive(clap::Args, Debug)]
pub struct RolloutArgs {
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(clap::Subcommand, Debug)]
enum RolloutCommand {
    /// Wait until the app's deployment is done (exit 0) or fails (exit 1), printing its progress.
    Status(StatusArgs),
}

#[derive(clap::Args, Debug)]
struct StatusArgs {
    /// The app: `app/NAME`, `apps/NAME` or `NAME`.
    app: String,
    /// Its namespace (default: the kubeconfig context's, else default).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Give up (exit 1) after this long; 0 waits as long as it takes.
    #[arg(long, default_value = "0s", value_parser = duration)]
    timeout: Duration,
    /// Fail (exit 1) once the deployment has made no progress this long: its instances
    /// cannot be placed, wait for dependencies, or keep failing (launch backoff), as
    /// Kubernetes' progressDeadlineSeconds.
    #[arg(long, default_value = "10m", value_parser = duration)]
    progress_deadline: Duration,
    /// The kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (e.g. 30s, 5m, 1h)"))
}

/// The app's name in `app/NAME`, `apps/NAME`, `apps.baton.dev/NAME` or `NAME`.
fn app_name(text: &str) -> Result<&str> {
    let name = match text.split_once('/') {
        Some(("app" | "apps" | "app.baton.dev" | "apps.baton.dev", name)) => name,
        Some((kind, _)) => bail!("{text}: `baton rollout status` follows apps (app/NAME), not {kind}"),
        None => text,
    };
    if name.is_empty() {
        bail!("{text}: give the app's name, e.g. app/web");
    }
    Ok(name)
}

/// Where a deployment stands.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// The controller has not seen this generation yet.
    Pending,
    /// Under way: the line to print.
    Going(String),
    /// No progress possible for now (unplaceable, waiting for dependencies, backing off).
    Blocked(String),
    Done(String),
}

fn progress(app: &App) -> Progress {
    let generation = app.metadata.generation.unwrap_or(0);
    let Some(status) = &app.status else { return Progress::Pending };
    if status.observed_generation.unwrap_or(0) < generation {
        return Progress::Pending;
    }
    let Some(condition) = status.condition(CONDITION_PROGRESSING) else { return Progress::Pending };
    let message = condition.message.clone();
    match (condition.status.as_str(), condition.reason.as_str()) {
        ("True", "Complete") => Progress::Done(message),
        ("True", "Backoff") | ("False", _) => Progress::Blocked(format!("{}: {message}", condition.reason)),
        _ => Progress::Going(format!("{}: {message}", condition.reason)),
    }
}

pub async fn run(args: RolloutArgs) -> Result<()> {
    let RolloutCommand::Status(args) = args.command;
    let name = app_name(&args.app)?.to_string();
    let config = match &args.kubeconfig {
        Some(path) => crate::kube_config(path).await?,
        None => kube::Config::infer()
            .await
            .context("no kubeconfig: set KUBECONFIG, or give --kubeconfig (baton dev prints where its is)")?,
    };
    let namespace = args.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("connecting to the API server")?;
    let api: kube::Api<App> = kube::Api::namespaced(client, &namespace);
    let started = Instant::now();
    let mut blocked_since: Option<Instant> = None;
    let mut last = String::new();
    loop {
        let app = match api.get_opt(&name).await {
            Ok(Some(app)) => app,
            Ok(None) => bail!("app {name:?} not found in namespace {namespace:?}"),
            Err(kube::Error::Api(status)) => bail!("Error from server ({}): {}", status.reason, status.message),
            Err(e) => return Err(e).context("reading the app from the API server"),
        };
        let line = match progress(&app) {
            Progress::Done(message) => {
                println!("app {name:?} successfully rolled out: {message}");
                return Ok(());
            }
            Progress::Pending => {
                blocked_since = None;
                "waiting for the controller to see the change".to_string()
            }
            Progress::Going(line) => {
                blocked_since = None;
                line
            }
            Progress::Blocked(line) => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= args.progress_deadline {
                    bail!(
                        "app {name:?} made no progress for {}: {line}",
                        humantime::format_duration(args.progress_deadline)
                    );
                }
                line
            }
        };
        if line != last {
            println!("Waiting for app {name:?} rollout to finish: {line}");
            last = line;
        }
        if !args.timeout.is_zero() && started.elapsed() >= args.timeout {
            bail!("timed out after {} waiting for app {name:?}: {last}", humantime::format_duration(args.timeout));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_as_kubectl_writes_them() {
        assert_eq!(app_name("app/web").unwrap(), "web");
        assert_eq!(app_name("apps.baton.dev/web").unwrap(), "web");
        assert_eq!(app_name("web").unwrap(), "web");
        assert!(app_name("deployment/web").unwrap_err().to_string().contains("not deployment"));
        assert!(app_name("app/").is_err());
    }

    fn with_progressing(generation: i64, observed: i64, status: &str, reason: &str) -> App {
        let mut app: App = serde_json::from_value(serde_json::json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "App",
            "metadata": {"name": "web", "generation": generation},
            "spec": {"cmd": "true"},
            "status": {"observedGeneration": observed, "conditions": [{
                "type": "Progressing", "status": status, "reason": reason, "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap();
        app.metadata.generation = Some(generation);
        app
    }

    #[test]
    fn progress_follows_the_progressing_condition_of_the_current_generation() {
        assert_eq!(progress(&with_progressing(2, 1, "True", "Complete")), Progress::Pending, "an older generation's");
        assert_eq!(progress(&with_progressing(2, 2, "True", "Complete")), Progress::Done("m".into()));
        assert_eq!(progress(&with_progressing(2, 2, "True", "Deploying")), Progress::Going("Deploying: m".into()));
        assert_eq!(progress(&with_progressing(2, 2, "False", "Stuck")), Progress::Blocked("Stuck: m".into()));
        assert_eq!(progress(&with_progressing(2, 2, "True", "Backoff")), Progress::Blocked("Backoff: m".into()));
    }
}
