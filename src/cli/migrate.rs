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
    #[arg(long, value_name = "PATH|URL")]
    from: DbTarget,
    /// The empty database to copy into (created when missing): a SQLite file or postgres://….
    #[arg(long, value_name = "PATH|URL")]
    to: DbTarget,
}

/// Runs `chatd migrate`.
pub async fn run(args: MigrateArgs) -> Result<()> {
    let report = transfer(&args.from, &args.to)
        .await
        .with_context(|| format!("cannot migrate {} to {}", args.from, args.to))?;
    if let Some(holder) = &report.source_in_use {
        eprintln!(
            "chatd: warning: a chatd ({holder}) was serving {} during the copy; what it stored \
             after the copy began is not in {}",
            args.from, args.to
        );
    }
    let mut out = std::io::stdout().lock();
    out.write_all(render(&args.from, &args.to, &report).as_bytes())?;
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
