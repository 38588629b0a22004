//! The command line as clap reads it, and the help it prints: a paragraph and an example per
//! command, the exit codes, where the configuration is looked for.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use super::init;

const AFTER_HELP: &str = "\
The configuration: --config PATH, else $DIRBRIDGE_CONFIG, else ./dirbridge.toml. Every key is
described in dirbridge.example.toml; `dirbridge init` writes a starter, `dirbridge check` tries it.

Exit codes:
  0  success
  1  the run finished but some objects failed or were rejected (`dirbridge status` lists them);
     for `check`, warnings only
  2  a configuration or connection failure (nothing was changed after the failure point)
  3  removals held back by the accidental-deletion guard (the rest was sent)

A first run: init, fill in the file, check, plan, sync; then `run` as a service.";

#[derive(Parser, Debug)]
#[command(
    name = "dirbridge",
    version,
    about = "Mirror LDAP / Active Directory users and groups into a SCIM 2.0 service or a REST API",
    long_about = "Mirror LDAP / Active Directory users and groups into a SCIM 2.0 service or a REST \
                  API. dirbridge reads the directory, keeps what it last pushed in a state folder, \
                  and sends only the differences; it never touches objects it did not create or \
                  adopt, and never prints a credential.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "DIRBRIDGE_CONFIG",
        default_value = "dirbridge.toml"
    )]
    pub config: PathBuf,
    /// Log level (error, warn, info, debug, trace) or a tracing filter; RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One delta pass: send only what changed since the last run.
    ///
    /// Reads the directory, compares it with what was last pushed (the state folder), sends
    /// the differences (creates, updates, deactivations, group and membership changes) and
    /// records each change as the target confirms it. A pass that would remove more than the
    /// accidental-deletion guard allows sends everything else and holds the removals (exit 3).
    /// In a terminal, a progress bar shows how far it is. Prints a one-line summary.
    ///
    /// Example: dirbridge --config /etc/dirbridge/dirbridge.toml sync
    Sync {
        /// Let this run's deactivations and deletions through even if they exceed the
        /// accidental-deletion guard's limits.
        #[arg(long)]
        approve_deletes: bool,
    },
    /// Approve the removals the last run held back.
    ///
    /// The accidental-deletion guard holds deactivations and deletions over its limits
    /// (sync.max_deletions, sync.max_deletion_percent). This approves exactly the set the last
    /// run held: the next sync, or the service's next pass, sends it; a different set (more
    /// removals since) is held again. Works while `run` is up.
    ///
    /// Example: dirbridge approve-deletes
    ApproveDeletes,
    /// Full resync: read the target and repair every drift.
    ///
    /// Lists the target's users and groups, matches them to the directory (exact matches
    /// only: a stranger is never adopted), and repairs what differs: changed attributes,
    /// objects deleted or re-enabled behind the gateway's back, wrong or dangling memberships.
    /// Rebuilds a lost state folder. Safe to run at any time, though not beside the running
    /// service (it holds the state folder: stop it first); the service runs one on
    /// daemon.full_resync.
    ///
    /// With --dry-run, nothing is sent and nothing is written: the drift report, what a
    /// resync would repair, read from the target's real state, per object and per attribute
    /// (the target's value and the directory's); it exits 1 when there is drift to repair.
    ///
    /// Example: dirbridge resync --dry-run --json
    Resync {
        /// Report what would be repaired, without sending or writing anything.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the report as JSON.
        #[arg(long, requires = "dry_run")]
        json: bool,
    },
    /// Dry run: what `sync` would send, without sending anything or changing state.
    ///
    /// Reads the directory and the state folder (not the target) and prints the operations
    /// a sync would send, and the entries it would reject with their DN and reason. Exits 1
    /// when any entry would be rejected.
    ///
    /// Example: dirbridge plan --json | jq '.operations | length'
    Plan {
        /// Print JSON: `operations` (what would be sent) and `rejected` (entries that would not
        /// be synced, with their DN and reason). Exits 1 when any entry is rejected.
        #[arg(long)]
        json: bool,
    },
    /// Run as a service: follow the directory's changes and push them as they happen.
    ///
    /// A first pass brings the target up to date; then changes are followed as the directory
    /// offers: syncrepl (RFC 4533) on OpenLDAP and 389-DS, change notifications with
    /// uSNChanged on Active Directory, else a modifyTimestamp or full poll every
    /// daemon.poll_interval. A full resync runs on daemon.full_resync. Reconnects with backoff,
    /// retries refused objects later, serves /healthz, /readyz, /metrics, /status and a
    /// dashboard on daemon.listen, tells systemd it is ready (Type=notify) and feeds its
    /// watchdog. SIGTERM or Ctrl-C stops it cleanly (exit 0), the state saved.
    ///
    /// With [ha], several gateways run this and the one holding the lease in the directory
    /// pushes; the others follow the directory and take over when it stops renewing. A
    /// SIGTERM on the active one hands the lease over at once.
    ///
    /// Example: dirbridge --config /etc/dirbridge/dirbridge.toml --log-format json run
    Run {
        /// With [ha]: never take the lease (maintenance of this host); if this gateway holds
        /// it, it is released. The gateway follows the directory as a standby does.
        #[arg(long)]
        standby_only: bool,
    },
    /// Show how one directory entry is mapped and what a sync would send for it.
    ///
    /// USER is a DN, or a userName, uid, mail, userPrincipalName or sAMAccountName. Prints
    /// every raw attribute of the entry (groups included), the mapped user and its groups, and
    /// the exact requests a sync would send now. Sends nothing. Exits 1 when the entry would be
    /// rejected, and says why.
    ///
    /// Example: dirbridge test-mapping alice@corp.example.com
    TestMapping {
        user: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration before the first run, changing nothing.
    ///
    /// Reads the config file, binds to the directory (and describes its TLS: protocol,
    /// certificate, expiry, the CA that verified it), counts the users and groups in scope,
    /// looks for the attribute that carries memberships, checks the target (reachable, what it
    /// declares, credentials proven by a read, attributes its schema requires) and the state
    /// folder (permissions, the target its records belong to). One line per check: OK, WARN or
    /// FAIL, with what to fix under it.
    ///
    /// Exit codes: 0 everything OK, 1 warnings only, 2 a failure.
    ///
    /// Example: dirbridge --config /etc/dirbridge/dirbridge.toml check
    Check {
        /// Print JSON: `checks` (level, check, detail, fix), the counts and the exit code.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented starter configuration, changing nothing that exists.
    ///
    /// Writes the file named by --config (default ./dirbridge.toml) for a directory flavour
    /// and a target, and beside it the secret files it names, empty and readable by their owner
    /// only (0600): the bind password, and the token, client secret or API key. Fill in what
    /// is marked CHANGE and the secret files, then run `dirbridge check`. Refuses if any of
    /// these files exists.
    ///
    /// Example: dirbridge --config /etc/dirbridge/dirbridge.toml init --profile ad --target scim
    Init {
        /// The directory flavour.
        #[arg(long, value_enum, default_value_t = init::StarterProfile::Openldap)]
        profile: init::StarterProfile,
        /// The target.
        #[arg(long, value_enum, default_value_t = init::StarterTarget::Scim)]
        target: init::StarterTarget,
    },
    /// Show what the state folder holds: last run, counts, objects in error.
    ///
    /// The last run and its outcome, the users and groups recorded, the objects in error with
    /// the reason and their next retry, the removals held, the quirks found on the target.
    /// Reads the state folder only; while the service runs, its /status says the same.
    ///
    /// Example: dirbridge status --json
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_command_teaches_with_a_paragraph_and_an_example() {
        Cli::command().debug_assert();
        let mut cli = Cli::command();
        let top = cli.render_long_help().to_string();
        assert!(
            top.contains("Exit codes:") && top.contains("$DIRBRIDGE_CONFIG"),
            "{top}"
        );
        for sub in cli.get_subcommands_mut() {
            let name = sub.get_name().to_string();
            if name == "help" {
                continue;
            }
            let help = sub.render_long_help().to_string();
            assert!(help.contains("Example: dirbridge"), "{name}: {help}");
            // A paragraph beyond the one-line summary.
            let about = sub
                .get_long_about()
                .map(|a| a.to_string())
                .unwrap_or_default();
            assert!(about.len() > 120, "{name}: {about}");
        }
    }
}
