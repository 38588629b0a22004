//! The command line: `sync`, `resync`, `plan`, `status`, `check`, `init`. Errors get their context here and are
//! printed once; exit codes: 0 success, 1 a run finished with object errors, 2 configuration or
//! connection failure.

mod args;
mod init;
mod output;
mod progress;

pub use args::{Cli, Command, LogFormat};

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::config::Config;
use crate::daemon::ha::Ha;
use crate::engine::{self, RunKind};
use crate::plan::guard::Approval;
use crate::state::records::Snapshot;
use crate::state::{approvals, Store};
use crate::target::AnyTarget;
use crate::target::Target;

/// Exit code for a configuration or connection failure.
const FAILURE: u8 = 2;
/// Exit code of a run whose removals the accidental-deletion guard held back.
const HELD: u8 = 3;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    log_panics();
    // A one-shot command runs on one thread: its requests, their connections and the executor
    // then never wake each other across threads (a first sync of 100k users took a quarter
    // less time and CPU so). Its heavy parts that are not async (mapping entries, a directory
    // pass's read of the records, syncing the store) have threads of their own. The service keeps
    // a worker thread beside the one its passes run on, so that its status server and change
    // feeds answer while a pass works; one, not one per core: the feed's reading tasks moving
    // between two workers left the allocator holding ~150 MB more than the heap at the end of
    // a 100k-user refresh (246 MiB resident against 96 with one worker, same change latency).
    let mut builder = match cli.command {
        Command::Run { .. } => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(1);
            b
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(FAILURE);
        }
    };
    // A panic that escapes a pass's own guard still ends with an error line and exit code 2,
    // never a bare 101.
    let outcome = rt.block_on(futures_util::FutureExt::catch_unwind(
        std::panic::AssertUnwindSafe(dispatch(&cli)),
    ));
    match outcome {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(FAILURE)
        }
        Err(payload) => {
            eprintln!(
                "error: internal error: {} (nothing after it was sent; please report it)",
                engine::panic_text(payload.as_ref())
            );
            ExitCode::from(FAILURE)
        }
    }
}

/// ldap3's own warnings repeat what our errors say better ("unmatched id" for every message a
/// server sends after a search was given up, "socket receive error"): below debug level they
/// are left out, so a misbehaving server cannot flood the log through them.
fn with_quiet_ldap3(level: &str) -> String {
    let verbose = ["debug", "trace"]
        .iter()
        .any(|l| level.to_ascii_lowercase().contains(l));
    if verbose || level.contains("ldap3") {
        level.to_string()
    } else {
        format!("{level},ldap3=error")
    }
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    // `check` reports what the log would warn about as lines of its own.
    let level = match cli.command {
        Command::Check { .. } if cli.log_level == "info" => "error",
        _ => cli.log_level.as_str(),
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(with_quiet_ldap3(level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| progress::LogWriter)
        // Colours only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match cli.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A defect that panics (here, or in a library: ldap3's connection task panics on some malformed
/// PDUs) is logged like any error, with where it happened. Passes catch their own panics
/// ([`engine::guarded`]); a library task that panics ends its connection, which the pass using
/// it sees as an error.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let what = engine::panic_text(info.payload());
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(at = %at, "internal error: {what}");
    }));
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    Ok(Config::load(&cli.config)?)
}

async fn dispatch(cli: &Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Sync { approve_deletes } => {
            if *approve_deletes {
                let cfg = load(cli)?;
                // No state yet: nothing was pushed, so there is nothing to remove either.
                if cfg.state.path.is_dir() {
                    approvals::set_deletion_approval(&cfg.state.path, Some(&Approval::NextRun))?;
                }
                let result = run(cli, RunKind::Sync).await;
                // Never left for a later run, even when this one failed before using it.
                if let Ok(Some(Approval::NextRun)) = approvals::deletion_approval(&cfg.state.path) {
                    approvals::set_deletion_approval(&cfg.state.path, None)?;
                }
                return result;
            }
            run(cli, RunKind::Sync).await
        }
        Command::ApproveDeletes => approve_deletes(cli),
        Command::Resync { dry_run: false, .. } => run(cli, RunKind::Resync).await,
        Command::Resync {
            dry_run: true,
            json,
        } => drift(cli, *json).await,
        Command::Plan { json } => plan(cli, *json).await,
        Command::Status { json } => status(cli, *json).await,
        Command::TestMapping { user, json } => test_mapping(cli, user, *json).await,
        Command::Run { standby_only } => daemon(cli, *standby_only).await,
        Command::Check { json } => check(cli, *json).await,
        Command::Init { profile, target } => {
            let written =
                init::write(*profile, *target, &cli.config).map_err(anyhow::Error::msg)?;
            for p in &written {
                println!("wrote {}", p.display());
            }
            println!(
                "Fill in what is marked CHANGE in {} and put each secret in its file (one line), then run:\n  dirbridge --config {} check",
                cli.config.display(),
                cli.config.display()
            );
            Ok(0)
        }
    }
}

async fn check(cli: &Cli, json: bool) -> anyhow::Result<u8> {
    let report = match Config::load(&cli.config) {
        Ok(cfg) => crate::check::run(&cfg).await,
        Err(e) => crate::check::unloadable(&e),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", report.text());
    }
    Ok(report.exit_code())
}

/// With `[ha]`, a one-shot run pushes as a gateway does: holding the lease (taken over from a
/// holder that stopped renewing, never beside one that renews), released at the end.
async fn take_lease(cfg: &Config, h: &crate::config::HaConfig) -> anyhow::Result<Ha> {
    let mut ha = Ha::start(&cfg.ldap, h, None, false);
    let wait = h.lease_ttl + h.renew * 4;
    if tokio::time::timeout(wait, ha.until_active()).await.is_ok() {
        return Ok(ha);
    }
    let (holder, problem) = ha.seen();
    ha.release().await;
    match (holder, problem) {
        (_, Some(why)) => anyhow::bail!("[ha]: cannot take the lease {}: {why}", h.lease_dn),
        (Some(holder), None) => anyhow::bail!(
            "[ha]: the gateway {holder} holds the lease {} and keeps renewing it: a one-shot run would push beside it. \
             It pushes changes itself (and repairs on its daemon.full_resync schedule); to run this here, stop it first",
            h.lease_dn
        ),
        (None, None) => anyhow::bail!("[ha]: the lease {} could not be taken within {}", h.lease_dn, humantime::format_duration(wait)),
    }
}

async fn run(cli: &Cli, kind: RunKind) -> anyhow::Result<u8> {
    let cfg = load(cli)?;
    let store = Store::open(&cfg.state.path, cfg.state.cache_capacity_bytes)?;
    let target = AnyTarget::from_config(&cfg)
        .map_err(anyhow::Error::msg)
        .context("target")?;
    let mut ha = match &cfg.ha {
        Some(h) => Some(take_lease(&cfg, h).await?),
        None => None,
    };
    // Another gateway may have pushed since this one's records were written: a sync here reads
    // the target back, as a take-over does.
    let kind = if ha.is_some() && kind == RunKind::Sync {
        tracing::info!("[ha]: this sync runs as a resync (another gateway may have pushed since this host's records were written)");
        RunKind::Resync
    } else {
        kind
    };
    let bar = progress::Progress::start(matches!(cli.log_format, LogFormat::Human));
    let report = match ha.as_mut() {
        None => engine::run(&cfg, &store, &target, kind)
            .await
            .map_err(anyhow::Error::from),
        Some(h) => {
            let fenced = crate::daemon::fenced::Fenced::new(&target, h.fence());
            // What this host saw as a standby is looked up too, as a take-over does.
            let (users, groups) = store.seen()?;
            let also = engine::Also { users, groups };
            tokio::select! {
                r = engine::run_takeover(&cfg, &store, &fenced, &also) => {
                    if r.is_ok() {
                        store.clear_seen().await?;
                    }
                    r.map_err(anyhow::Error::from)
                }
                _ = h.lost() => Err(anyhow::anyhow!("[ha]: the lease was lost during the run (another gateway may push now): it stopped; what it confirmed is saved")),
            }
        }
    };
    drop(bar);
    if let Some(h) = ha {
        h.release().await;
    }
    let report = report.with_context(|| format!("{} failed", kind.name()))?;
    println!("{}", report.summary.line(kind.name()));
    if report.summary.deletions_held > 0 {
        eprintln!(
            "{} deactivations/deletions were held back by the accidental-deletion guard and NOT sent \
             (the rest of the run was). Check the directory read; if they are meant, run \
             `dirbridge approve-deletes` (or `dirbridge sync --approve-deletes`).",
            report.summary.deletions_held
        );
        return Ok(HELD);
    }
    Ok(
        if report.summary.errors > 0 || report.summary.rejected > 0 {
            1
        } else {
            0
        },
    )
}

/// `status` while the service runs (its store is in use): what its status server says.
async fn service_status(
    cfg: &Config,
    json: bool,
    ha: Option<&crate::daemon::ha::HolderView>,
) -> anyhow::Result<u8> {
    let Some(addr) = cfg.daemon.listen else {
        anyhow::bail!(
            "the state store {} is in use by the running service, and it serves no status (daemon.listen = \"off\")",
            cfg.state.path.display()
        );
    };
    let url = format!("http://{addr}/status");
    let live = async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?;
        let mut req = client.get(&url);
        if let Some(t) = &cfg.daemon.status_token {
            req = req.bearer_auth(t.expose());
        }
        req.send()
            .await?
            .error_for_status()?
            .json::<serde_json::Value>()
            .await
    }
    .await;
    match (live, json) {
        (Ok(mut doc), true) => {
            if let (Some(h), Some(map)) = (ha, doc.as_object_mut()) {
                map.insert("lease".into(), serde_json::to_value(h)?);
            }
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        (Ok(doc), false) => {
            println!(
                "The service runs (it holds the state store); from {url}: {}: {}",
                if doc["ready"] == true { "ready" } else { "not ready" },
                doc["reason"].as_str().unwrap_or_default()
            );
            let store = &doc["store"];
            println!(
                "{} users ({} active), {} groups; {} objects in error. The dashboard: http://{addr}/",
                store["users"], store["users_active"], store["groups"],
                store["errors"].as_array().map_or(0, Vec::len)
            );
        }
        (Err(e), _) => anyhow::bail!(
            "the state store {} is in use by the running service, and its status server {url} did not answer: {e}",
            cfg.state.path.display()
        ),
    }
    Ok(0)
}

/// Approves the set the last run held back, by its digest: a different set (more removals
/// since) is held again.
fn approve_deletes(cli: &Cli) -> anyhow::Result<u8> {
    let cfg = load(cli)?;
    let Some(held) = approvals::held_deletions(&cfg.state.path)? else {
        println!("Nothing is held: the last run sent every deactivation and deletion it planned.");
        return Ok(0);
    };
    approvals::set_deletion_approval(&cfg.state.path, Some(&Approval::Set(held.digest.clone())))?;
    println!(
        "Approved {} deactivations/deletions ({} objects managed), for example:",
        held.count, held.managed
    );
    for s in &held.sample {
        println!("  {s}");
    }
    println!(
        "The next sync (or the service's next pass) sends them, if it plans exactly this set."
    );
    Ok(0)
}

async fn daemon(cli: &Cli, standby_only: bool) -> anyhow::Result<u8> {
    let cfg = load(cli)?;
    if standby_only && cfg.ha.is_none() {
        anyhow::bail!("--standby-only is for gateways that share a lease: configure [ha] (see the README's HA section)");
    }
    let store = std::sync::Arc::new(Store::open(
        &cfg.state.path,
        cfg.state.cache_capacity_bytes,
    )?);
    let target = AnyTarget::from_config(&cfg)
        .map_err(anyhow::Error::msg)
        .context("target")?;
    crate::daemon::run(&cfg, store, &target, standby_only).await?;
    Ok(0)
}

/// What a dry run needs, without contacting the target or creating the store: the records,
/// if there are any, and the target client with the quirks earlier runs found on it.
fn offline(cfg: &Config) -> anyhow::Result<(Snapshot, AnyTarget)> {
    offline_with(cfg, Store::open)
}

/// [`offline`] with the store opened read-only: nothing in the state folder is written (a
/// store of an earlier release, which only a writer migrates, is refused).
fn offline_read_only(cfg: &Config) -> anyhow::Result<(Snapshot, AnyTarget)> {
    if Store::awaits_migration(&cfg.state.path) {
        anyhow::bail!(
            "{} holds the store of an earlier release: run `dirbridge plan` once to migrate it (it sends nothing)",
            cfg.state.path.display()
        );
    }
    offline_with(cfg, Store::open_read_only)
}

fn offline_with(
    cfg: &Config,
    open: fn(&std::path::Path, u64) -> Result<Store, crate::state::StateError>,
) -> anyhow::Result<(Snapshot, AnyTarget)> {
    let target = AnyTarget::from_config(cfg)
        .map_err(anyhow::Error::msg)
        .context("target")?;
    if !Store::exists(&cfg.state.path) {
        return Ok((Snapshot::default(), target));
    }
    let store = open(&cfg.state.path, cfg.state.cache_capacity_bytes)?;
    if store.target_identity()?.as_deref() == Some(target.describe().as_str()) {
        target.remember_quirks(&store.quirks()?);
    }
    Ok((store.snapshot()?, target))
}

async fn plan(cli: &Cli, json: bool) -> anyhow::Result<u8> {
    let cfg = load(cli)?;
    let (records, target) = offline(&cfg)?;
    let (ops, desired) = engine::dry_run(&cfg, &records, &target)
        .await
        .context("plan failed")?;
    if json {
        let doc = serde_json::json!({ "operations": ops, "rejected": desired.rejected });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", output::plan_table(&ops, &desired));
    }
    // Entries that would not be synced are a finding, as in `sync`.
    Ok(if desired.rejected.is_empty() { 0 } else { 1 })
}

/// `resync --dry-run`: what a resync would repair; exit 1 when there is any.
async fn drift(cli: &Cli, json: bool) -> anyhow::Result<u8> {
    let cfg = load(cli)?;
    let (records, target) = offline_read_only(&cfg)?;
    let (drift, desired) = engine::drift::drift(&cfg, &records, &target)
        .await
        .context("resync --dry-run failed")?;
    if json {
        let mut doc = serde_json::to_value(&drift)?;
        doc["rejected"] = serde_json::to_value(&desired.rejected)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", output::drift_text(&drift));
    }
    Ok(if drift.is_empty() { 0 } else { 1 })
}

async fn test_mapping(cli: &Cli, who: &str, json: bool) -> anyhow::Result<u8> {
    let cfg = load(cli)?;
    let (records, target) = offline(&cfg)?;
    let p = engine::preview::preview(&cfg, &records, &target, who)
        .await
        .context("test-mapping failed")?;
    let requests: Vec<_> = p.requests.iter().flat_map(|r| target.render(r)).collect();
    if json {
        let mut doc = serde_json::to_value(&p)?;
        doc["requests"] = serde_json::to_value(&requests)?;
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", output::preview_text(&p, &requests));
    }
    Ok(if p.rejected.is_some() { 1 } else { 0 })
}

async fn status(cli: &Cli, json: bool) -> anyhow::Result<u8> {
    let cfg = load(cli)?;
    // With [ha]: who holds the lease, read from the directory (the store may be the running
    // service's, and says nothing of the other gateways).
    let ha = match &cfg.ha {
        Some(ha) => Some(crate::daemon::ha::read_holder(&cfg.ldap, ha).await),
        None => None,
    };
    if let (Some(h), false) = (&ha, json) {
        println!("{}", h.text);
    }
    if !Store::exists(&cfg.state.path) {
        if json {
            println!(
                "{}",
                serde_json::json!({ "state": cfg.state.path, "initialized": false, "lease": ha })
            );
        } else {
            println!(
                "No state at {} yet: run `dirbridge sync` first.",
                cfg.state.path.display()
            );
        }
        return Ok(0);
    }
    let store = match Store::open(&cfg.state.path, cfg.state.cache_capacity_bytes) {
        Ok(s) => s,
        // The service holds the store: its status server has the live state.
        Err(e) if e.is_in_use() => return service_status(&cfg, json, ha.as_ref()).await,
        Err(e) => return Err(e.into()),
    };
    let view = crate::status::StatusView::read(&store, &cfg.state.path)?;
    if json {
        let mut doc = serde_json::to_value(&view)?;
        if let (Some(h), Some(map)) = (&ha, doc.as_object_mut()) {
            map.insert("lease".into(), serde_json::to_value(h)?);
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", view.text());
    }
    Ok(0)
}
