//! `sluice-operator`: `run` runs the controller, `crd` prints the
//! CustomResourceDefinition. Every setting of `run` is a flag and an
//! environment variable (`SLUICE_OPERATOR_*`; the pod's own name and
//! namespace also come from the downward-API variables `POD_NAME` and
//! `POD_NAMESPACE`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_operator::driver::GrpcPodControl;
use sluice_operator::leader::{LeaderElector, LeaseConfig};
use sluice_operator::metrics::Metrics;
use sluice_operator::reconcile::validate::ValidateOptions;
use sluice_operator::server::{self, HttpState};
use sluice_operator::{Context, ContextOptions};

#[derive(Parser, Debug)]
#[command(
    name = "sluice-operator",
    version,
    about = "Runs Sluice ingesters on Kubernetes",
    long_about = "Runs Sluice ingesters on Kubernetes.\n\n\
        Watches `Ingester` resources (sluice.dev/v1alpha1, short name `ingr`) and turns each into \
        a StatefulSet of ingester pods with a WAL volume each, a headless and a client Service, a \
        ConfigMap and a PodDisruptionBudget. Through every pod's control RPC it rotates WALs on a \
        staggered schedule, triggers persists past the spec's thresholds, and drains pods (persist \
        everything, empty the WAL) before a scale-down, a rolling restart or deletion removes them.\n\n\
        Start with `sluice-operator crd | kubectl apply -f -`, then `sluice-operator run` (in the \
        cluster, or locally with a kubeconfig).",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller: watch Ingesters and drive their pods.
    Run(Box<RunArgs>),
    /// Print the Ingester CustomResourceDefinition as YAML (what
    /// crds/ingester.yaml holds).
    Crd,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Watch Ingesters in this namespace only. All namespaces when unset.
    #[arg(long, env = "SLUICE_OPERATOR_NAMESPACE")]
    namespace: Option<String>,

    /// Address of the HTTP endpoint: /metrics (Prometheus), /health, /ready.
    #[arg(
        long,
        env = "SLUICE_OPERATOR_HTTP_BIND",
        default_value = "0.0.0.0:8080"
    )]
    http_bind: SocketAddr,

    /// Longest time between two driver steps of one Ingester (status poll,
    /// drain progress, rotation, persist triggers), e.g. `5s`.
    #[arg(long, env = "SLUICE_OPERATOR_POLL_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,

    /// Timeout of each control RPC to a pod (connect included), e.g. `10s`.
    #[arg(long, env = "SLUICE_OPERATOR_CONTROL_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    control_timeout: Duration,

    /// Ingesters reconciled at the same time.
    #[arg(long, env = "SLUICE_OPERATOR_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,

    /// The cluster's DNS domain, for the pod addresses in the status.
    #[arg(
        long,
        env = "SLUICE_OPERATOR_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    cluster_domain: String,

    /// Elect a leader through a Lease, so several replicas can run and one
    /// reconciles. Disable only when exactly one replica runs.
    #[arg(long, env = "SLUICE_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "SLUICE_OPERATOR_LEASE_NAME",
        default_value = "sluice-operator"
    )]
    lease_name: String,

    /// Namespace of the Lease. [default: POD_NAMESPACE, else --namespace,
    /// else `default`]
    #[arg(long, env = "SLUICE_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,

    /// How long the Lease stays valid without renewal; a new leader takes
    /// over at most this long after the old one vanished.
    #[arg(long, env = "SLUICE_OPERATOR_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,

    /// How long the leader keeps leading while renewals fail; must be
    /// shorter than the lease duration.
    #[arg(long, env = "SLUICE_OPERATOR_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    renew_deadline: Duration,

    /// This replica's identity in the Lease and in Events. [default:
    /// POD_NAME, else the host name]
    #[arg(long, env = "SLUICE_OPERATOR_IDENTITY")]
    identity: Option<String>,

    /// Log filter, e.g. `info` or `sluice_operator=debug,info`.
    #[arg(long, env = "SLUICE_OPERATOR_LOG", default_value = "info")]
    log: String,

    /// Log format: `json` (one object per line, for log collectors) or
    /// `text`.
    #[arg(
        long,
        env = "SLUICE_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            let yaml = sluice_operator::crd::crd_yaml().context("serialise the CRD")?;
            print!("{yaml}");
            Ok(())
        }
        Command::Run(args) => {
            init_logs(&args)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("start the async runtime")?
                .block_on(run(*args))
        }
    }
}

fn init_logs(args: &RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .with_context(|| format!("--log {:?} is not a log filter", args.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

fn identity(args: &RunArgs) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "sluice-operator".into())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.renew_deadline >= args.lease_duration {
        anyhow::bail!(
            "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?})",
            args.renew_deadline,
            args.lease_duration
        );
    }
    let identity = identity(&args);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        identity,
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        http = %args.http_bind,
        leader_election = args.leader_election,
        "sluice-operator starting"
    );
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = server::bind(args.http_bind)
        .await
        .with_context(|| format!("bind --http-bind {}", args.http_bind))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let http = tokio::spawn(server::serve(
        listener,
        HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        stopped(stop_rx.clone()),
    ));
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });
    }

    let client = kube::Client::try_default()
        .await
        .context("connect to the Kubernetes API (in-cluster config or KUBECONFIG)")?;

    let elector = if args.leader_election {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".into());
        let elector = Arc::new(LeaderElector::new(
            client.clone(),
            LeaseConfig {
                namespace,
                name: args.lease_name.clone(),
                identity: identity.clone(),
                lease_duration: args.lease_duration,
                renew_deadline: args.renew_deadline,
                retry_period: (args.lease_duration / 5).max(Duration::from_secs(1)),
            },
        ));
        let ready = ready.clone();
        tokio::select! {
            () = elector.acquire(move || ready.store(true, Ordering::Release)) => {}
            () = stopped(stop_rx.clone()) => {
                let _ = http.await;
                return Ok(());
            }
        }
        Some(elector)
    } else {
        ready.store(true, Ordering::Release);
        None
    };
    metrics.leader.set(1);
    tracing::info!(identity, "leading: reconciling Ingesters");

    let ctx = Arc::new(Context::new(
        client,
        Arc::new(GrpcPodControl::new(args.control_timeout)),
        metrics.clone(),
        ContextOptions {
            validate: ValidateOptions {
                cluster_domain: args.cluster_domain.clone(),
            },
            poll_interval: args.poll_interval,
            instance: Some(identity.clone()),
        },
    ));
    // Stop reconciling on a signal, or when the Lease is lost.
    let mut lost = false;
    {
        let controller = sluice_operator::reconcile::run(
            ctx,
            args.namespace.clone(),
            args.concurrency,
            stopped(stop_rx.clone()),
        );
        match &elector {
            Some(e) => {
                let e = e.clone();
                let holding = e.hold();
                tokio::select! {
                    () = controller => {}
                    () = holding => {
                        lost = true;
                    }
                }
            }
            None => controller.await,
        }
    }
    metrics.leader.set(0);
    if let Some(e) = &elector
        && !lost
    {
        e.release().await;
    }
    let _ = stop_tx.send(true);
    let _ = http.await;
    if lost {
        // Another replica leads now; exit so Kubernetes restarts this one
        // as a candidate with fresh caches.
        anyhow::bail!("lost the leader Lease");
    }
    tracing::info!("stopped");
    Ok(())
}
