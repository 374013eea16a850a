//! Operator commands (`status`, `rotate`, `persist`, `drain`, `resume`) over
//! the ControlService, and catalog listings (`tables`, `namespaces`) over the
//! CatalogService.
//!
//! Each is one unary RPC. Reports go to stdout, readable by default or as one
//! JSON object with `--json` (stable keys: the proto field names). A refused
//! call (including UNIMPLEMENTED from a server without the RPC) is returned
//! as an error naming the RPC, its gRPC code and the server's message.
//! `--wait` calls have no client-side deadline: persisting or draining a
//! large buffer can take minutes; HTTP/2 keep-alives still notice a dead
//! server.

use serde_json::{Value, json};
use sluice_proto::v1;
use sluice_proto::v1::catalog_service_client::CatalogServiceClient;
use sluice_proto::v1::control_service_client::ControlServiceClient;

use super::{CliError, ConnectArgs, MAX_MESSAGE_BYTES, human_bytes, thousands};

/// Show an ingester's state, buffer, WAL and persist queue.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print one JSON object instead of text.
    #[arg(long, env = "SLUICE_JSON")]
    pub json: bool,
}

/// Close the open WAL segment and mark its partitions for persistence.
#[derive(Debug, Clone, clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print one JSON object instead of text.
    #[arg(long, env = "SLUICE_JSON")]
    pub json: bool,
}

/// Persist buffered data to Parquet: everything, one namespace, or one table.
#[derive(Debug, Clone, clap::Args)]
pub struct PersistArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Only this namespace (default: every namespace).
    #[arg(long, short = 'n', env = "SLUICE_PERSIST_NAMESPACE")]
    pub namespace: Option<String>,
    /// Only this table of --namespace (default: every table).
    #[arg(
        long,
        short = 't',
        env = "SLUICE_PERSIST_TABLE",
        requires = "namespace"
    )]
    pub table: Option<String>,
    /// Answer only once the persist jobs are done.
    #[arg(long, env = "SLUICE_PERSIST_WAIT")]
    pub wait: bool,
    /// Print one JSON object instead of text.
    #[arg(long, env = "SLUICE_JSON")]
    pub json: bool,
}

/// Drain before shutdown (PrepareShutdown): refuse new writes, persist
/// everything, delete the WAL. Safe to repeat.
#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Answer only once fully drained.
    #[arg(long, env = "SLUICE_DRAIN_WAIT")]
    pub wait: bool,
    /// Print one JSON object instead of text.
    #[arg(long, env = "SLUICE_JSON")]
    pub json: bool,
}

/// Undo a drain that has not finished: accept writes again.
#[derive(Debug, Clone, clap::Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print one JSON object instead of text.
    #[arg(long, env = "SLUICE_JSON")]
    pub json: bool,
}

/// List the tables of a namespace with their columns and types.
#[derive(Debug, Clone, clap::Args)]
pub struct TablesArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Namespace whose tables to list.
    #[arg(long, short = 'n', env = "SLUICE_NAMESPACE")]
    pub namespace: String,
    /// Print one JSON object instead of text.
    #[arg(long, env = "SLUICE_JSON")]
    pub json: bool,
}

/// List the namespaces the ingester's catalog knows.
#[derive(Debug, Clone, clap::Args)]
pub struct NamespacesArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print one JSON object instead of text.
    #[arg(long, env = "SLUICE_JSON")]
    pub json: bool,
}

async fn control(
    connect: &ConnectArgs,
) -> Result<ControlServiceClient<super::GrpcChannel>, CliError> {
    Ok(ControlServiceClient::new(connect.connect().await?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

async fn catalog(
    connect: &ConnectArgs,
) -> Result<CatalogServiceClient<super::GrpcChannel>, CliError> {
    Ok(CatalogServiceClient::new(connect.connect().await?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

fn print(json: bool, value: Value, text: String) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

/// Runs `sluice-ingester status`.
pub async fn run_status(args: StatusArgs) -> anyhow::Result<()> {
    let r = control(&args.connect)
        .await?
        .status(v1::StatusRequest {})
        .await
        .map_err(|s| CliError::rpc("Status", s))?
        .into_inner();
    print(args.json, status_json(&r), status_text(&r));
    Ok(())
}

/// Runs `sluice-ingester rotate`.
pub async fn run_rotate(args: RotateArgs) -> anyhow::Result<()> {
    let r = control(&args.connect)
        .await?
        .rotate_wal(v1::RotateWalRequest {})
        .await
        .map_err(|s| CliError::rpc("RotateWal", s))?
        .into_inner();
    print(
        args.json,
        json!({"closed_segment": r.closed_segment, "partitions_marked": r.partitions_marked}),
        format!(
            "closed WAL segment {}; {} partitions marked for persistence",
            r.closed_segment,
            thousands(r.partitions_marked)
        ),
    );
    Ok(())
}

/// Runs `sluice-ingester persist`.
pub async fn run_persist(args: PersistArgs) -> anyhow::Result<()> {
    let request = v1::PersistRequest {
        namespace: args.namespace.clone().unwrap_or_default(),
        table: args.table.clone().unwrap_or_default(),
        wait: args.wait,
    };
    let r = control(&args.connect)
        .await?
        .persist(request)
        .await
        .map_err(|s| CliError::rpc("Persist", s))?
        .into_inner();
    let scope = match (&args.namespace, &args.table) {
        (Some(ns), Some(t)) => format!("table `{t}` of `{ns}`"),
        (Some(ns), None) => format!("namespace `{ns}`"),
        _ => "all namespaces".to_owned(),
    };
    print(
        args.json,
        json!({"partitions_enqueued": r.partitions_enqueued, "rows_enqueued": r.rows_enqueued, "waited": args.wait}),
        format!(
            "{} {} partitions ({} rows) of {scope}",
            if args.wait { "persisted" } else { "enqueued" },
            thousands(r.partitions_enqueued),
            thousands(r.rows_enqueued)
        ),
    );
    Ok(())
}

/// Runs `sluice-ingester drain` (PrepareShutdown).
pub async fn run_drain(args: DrainArgs) -> anyhow::Result<()> {
    let r = control(&args.connect)
        .await?
        .prepare_shutdown(v1::PrepareShutdownRequest { wait: args.wait })
        .await
        .map_err(|s| CliError::rpc("PrepareShutdown", s))?
        .into_inner();
    print(
        args.json,
        json!({"state": state_name(r.state), "buffered_rows": r.buffered_rows, "wal_segments": r.wal_segments}),
        format!(
            "state {}: {} rows buffered, {} WAL segments",
            state_name(r.state),
            thousands(r.buffered_rows),
            thousands(r.wal_segments)
        ),
    );
    Ok(())
}

/// Runs `sluice-ingester resume` (ResumeIngest).
pub async fn run_resume(args: ResumeArgs) -> anyhow::Result<()> {
    let r = control(&args.connect)
        .await?
        .resume_ingest(v1::ResumeIngestRequest {})
        .await
        .map_err(|s| CliError::rpc("ResumeIngest", s))?
        .into_inner();
    print(
        args.json,
        json!({"state": state_name(r.state)}),
        format!("state {}", state_name(r.state)),
    );
    Ok(())
}

/// Runs `sluice-ingester tables`.
pub async fn run_tables(args: TablesArgs) -> anyhow::Result<()> {
    let r = catalog(&args.connect)
        .await?
        .list_tables(v1::ListTablesRequest {
            namespace: args.namespace.clone(),
        })
        .await
        .map_err(|s| CliError::rpc("ListTables", s))?
        .into_inner();
    print(
        args.json,
        tables_json(&r.tables),
        tables_text(&args.namespace, &r.tables),
    );
    Ok(())
}

/// Runs `sluice-ingester namespaces`.
pub async fn run_namespaces(args: NamespacesArgs) -> anyhow::Result<()> {
    let r = catalog(&args.connect)
        .await?
        .list_namespaces(v1::ListNamespacesRequest {})
        .await
        .map_err(|s| CliError::rpc("ListNamespaces", s))?
        .into_inner();
    let value = json!({
        "namespaces": r.namespaces.iter().map(|n| json!({"id": n.id, "name": n.name})).collect::<Vec<_>>()
    });
    let text = if r.namespaces.is_empty() {
        "no namespaces".to_owned()
    } else {
        let width = r
            .namespaces
            .iter()
            .map(|n| n.id.to_string().len())
            .max()
            .unwrap_or(0);
        r.namespaces
            .iter()
            .map(|n| format!("{:>width$}  {}", n.id, n.name))
            .collect::<Vec<_>>()
            .join("\n")
    };
    print(args.json, value, text);
    Ok(())
}

/// `INGESTER_STATE_READY` → `READY`; an unknown number as itself.
fn state_name(state: i32) -> String {
    match v1::IngesterState::try_from(state) {
        Ok(s) => s
            .as_str_name()
            .trim_start_matches("INGESTER_STATE_")
            .to_owned(),
        Err(_) => format!("UNKNOWN({state})"),
    }
}

fn column_type_name(t: i32) -> String {
    match v1::ColumnType::try_from(t) {
        Ok(v1::ColumnType::Tag) => "tag".to_owned(),
        Ok(v1::ColumnType::Time) => "time".to_owned(),
        Ok(v1::ColumnType::I64) => "i64".to_owned(),
        Ok(v1::ColumnType::U64) => "u64".to_owned(),
        Ok(v1::ColumnType::F64) => "f64".to_owned(),
        Ok(v1::ColumnType::Bool) => "bool".to_owned(),
        Ok(v1::ColumnType::String) => "string".to_owned(),
        Ok(v1::ColumnType::Unspecified) | Err(_) => format!("unknown({t})"),
    }
}

fn status_json(r: &v1::StatusResponse) -> Value {
    json!({
        "ingester_id": r.ingester_id,
        "state": state_name(r.state),
        "buffered_rows": r.buffered_rows,
        "buffered_bytes": r.buffered_bytes,
        "wal_segments": r.wal_segments,
        "wal_bytes": r.wal_bytes,
        "persist_queue_depth": r.persist_queue_depth,
        "persist_active_jobs": r.persist_active_jobs,
        "oldest_unpersisted_write_age_ms": r.oldest_unpersisted_write_age_ms,
        "partitions": r.partitions,
        "version": r.version,
    })
}

fn status_text(r: &v1::StatusResponse) -> String {
    let oldest = if r.oldest_unpersisted_write_age_ms == 0 {
        "none (everything is persisted)".to_owned()
    } else {
        let age = std::time::Duration::from_millis(r.oldest_unpersisted_write_age_ms);
        format!("{} ago", humantime::format_duration(age))
    };
    let version = if r.version.is_empty() {
        String::new()
    } else {
        format!(" (version {})", r.version)
    };
    format!(
        "ingester:   {}{version}\n\
         state:      {}\n\
         buffer:     {} rows, {} in {} partitions\n\
         wal:        {} segments, {}\n\
         persist:    {} queued, {} running\n\
         oldest unpersisted write: {oldest}",
        r.ingester_id,
        state_name(r.state),
        thousands(r.buffered_rows),
        human_bytes(r.buffered_bytes),
        thousands(r.partitions),
        thousands(r.wal_segments),
        human_bytes(r.wal_bytes),
        thousands(r.persist_queue_depth),
        thousands(r.persist_active_jobs),
    )
}

fn tables_json(tables: &[v1::TableSchema]) -> Value {
    json!({
        "tables": tables.iter().map(|t| json!({
            "id": t.id,
            "namespace": t.namespace,
            "name": t.name,
            "columns": t.columns.iter().map(|c| json!({
                "id": c.id,
                "name": c.name,
                "type": column_type_name(c.column_type),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()
    })
}

fn tables_text(namespace: &str, tables: &[v1::TableSchema]) -> String {
    if tables.is_empty() {
        return format!("no tables in namespace `{namespace}`");
    }
    let mut out = String::new();
    for (i, t) in tables.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{} ({} columns)\n", t.name, t.columns.len()));
        let width = t
            .columns
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        for c in &t.columns {
            out.push_str(&format!(
                "  {:<width$}  {}\n",
                c.name,
                column_type_name(c.column_type)
            ));
        }
    }
    out.pop(); // println! adds the final newline
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_prints_for_people_and_for_scripts() {
        let r = v1::StatusResponse {
            ingester_id: "ing-0".into(),
            state: v1::IngesterState::Ready as i32,
            buffered_rows: 1_234_567,
            buffered_bytes: 10 * 1024 * 1024,
            wal_segments: 3,
            wal_bytes: 2048,
            persist_queue_depth: 2,
            persist_active_jobs: 1,
            oldest_unpersisted_write_age_ms: 90_000,
            partitions: 12,
            version: "0.1.0".into(),
            wal_empty: false,
        };
        assert_eq!(
            status_text(&r),
            "ingester:   ing-0 (version 0.1.0)\n\
             state:      READY\n\
             buffer:     1,234,567 rows, 10.0 MiB in 12 partitions\n\
             wal:        3 segments, 2.0 KiB\n\
             persist:    2 queued, 1 running\n\
             oldest unpersisted write: 1m 30s ago"
        );
        let j = status_json(&r);
        assert_eq!(j["state"], "READY");
        assert_eq!(j["buffered_rows"], 1_234_567);
        assert_eq!(state_name(99), "UNKNOWN(99)");
    }

    #[test]
    fn tables_list_columns_and_types() {
        let col = |id, name: &str, t: v1::ColumnType| v1::Column {
            id,
            name: name.into(),
            column_type: t as i32,
        };
        let tables = [v1::TableSchema {
            id: 1,
            namespace: "ns".into(),
            name: "cpu".into(),
            columns: vec![
                col(1, "host", v1::ColumnType::Tag),
                col(2, "usage_idle", v1::ColumnType::F64),
                col(3, "time", v1::ColumnType::Time),
            ],
        }];
        assert_eq!(
            tables_text("ns", &tables),
            "cpu (3 columns)\n  host        tag\n  usage_idle  f64\n  time        time"
        );
        assert_eq!(tables_text("ns", &[]), "no tables in namespace `ns`");
        assert_eq!(
            tables_json(&tables)["tables"][0]["columns"][1]["type"],
            "f64"
        );
    }
}
