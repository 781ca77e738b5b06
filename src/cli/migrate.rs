//! `chatd migrate --from DB --to DB`: copies a whole database into an empty one, of either
//! backend (SQLite ⇄ PostgreSQL), and prints what it verified. The copying and checking is
//! the store's ([`crate::store::transfer`]); this is its front end.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;

use crate::store::{transfer, DbTarget, TransferReport};

/// Arguments of `chatd migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The database to copy: a SQLite file (or sqlite:PATH) or postgres://USER@HOST/DB. Stop
    /// its server first: what it stores during the copy is not copied.
    // Both are parsed after clap (`target`): clap's own error would echo the value, and with
    // it a password in the URL.
    #[arg(long, value_name = "PATH|URL")]
    from: String,
    /// The empty database to copy into (created when missing): a SQLite file or postgres://….
    #[arg(long, value_name = "PATH|URL")]
    to: String,
}

/// A `--from` or `--to` value as a database target; a bad one is refused in one line that
/// never shows a password.
fn target(flag: &str, text: &str) -> Result<DbTarget> {
    text.parse()
        .map_err(|e| anyhow::anyhow!("invalid value for --{flag}: {e}"))
}

/// Runs `chatd migrate`.
pub async fn run(args: MigrateArgs) -> Result<()> {
    let (from, to) = (target("from", &args.from)?, target("to", &args.to)?);
    let report = transfer(&from, &to)
        .await
        .with_context(|| format!("cannot migrate {from} to {to}"))?;
    if let Some(holder) = &report.source_in_use {
        eprintln!(
            "chatd: warning: a chatd ({holder}) was serving {from} during the copy; what it \
             stored after the copy began is not in {to}"
        );
    }
    let mut out = std::io::stdout().lock();
    out.write_all(render(&from, &to, &report).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The report as printed: one line per table, then the newest message id.
fn render(from: &DbTarget, to: &DbTarget, report: &TransferReport) -> String {
    let mut text = format!("copied {from} to {to}\n");
    text.push_str(&format!(
        "{:<22} {:>10} {:>10}\n",
        "TABLE", "SOURCE", "TARGET"
    ));
    for t in &report.tables {
        text.push_str(&format!(
            "{:<22} {:>10} {:>10}\n",
            t.table, t.source, t.target
        ));
    }
    text.push_str(&format!(
        "newest message id {} on both; every count verified\n",
        report.max_message_id
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TableCount;

    #[test]
    fn a_bad_target_is_one_line_without_the_password() {
        let err = target("to", "postgres://chat:s3cret@db:notaport/chat").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.starts_with("invalid value for --to: "), "{text}");
        assert!(!text.contains("s3cret") && !text.contains('\n'), "{text}");
        assert!(target("from", "sqlite:").is_err());
        assert_eq!(
            target("from", "old.db").unwrap(),
            DbTarget::Sqlite("old.db".into())
        );
    }

    #[test]
    fn the_report_is_a_table() {
        let report = TransferReport {
            tables: vec![
                TableCount {
                    table: "users",
                    source: 3,
                    target: 3,
                },
                TableCount {
                    table: "messages",
                    source: 1200,
                    target: 1200,
                },
            ],
            max_message_id: 1207,
            source_in_use: None,
        };
        let from: DbTarget = "old.db".parse().unwrap();
        let to: DbTarget = "postgres://chat:pw@db/chat".parse().unwrap();
        let text = render(&from, &to, &report);
        assert_eq!(
            text,
            "copied sqlite:old.db to postgres://chat:***@db/chat\n\
             TABLE                      SOURCE     TARGET\n\
             users                           3          3\n\
             messages                     1200       1200\n\
             newest message id 1207 on both; every count verified\n"
        );
    }
}
