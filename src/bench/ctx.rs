//! What every scenario shares: the options, the machine, one password hash for every
//! account, fresh account names, the server to drive and a progress bar.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::auth::Hasher;
use crate::protocol::Secret;

use super::load;
use super::options::{BenchOptions, TargetSpec};
use super::report::Machine;
use super::target::Target;

/// What every scenario shares: the options, one password hash, unique account names.
pub(crate) struct Ctx<'a> {
    pub options: &'a BenchOptions,
    pub machine: Machine,
    /// The argon2id hash of [`load::PASSWORD`], made once for every account.
    pub password_hash: String,
    /// Random per run, so that names never collide on an existing server.
    tag: String,
    next_prefix: AtomicUsize,
}

impl<'a> Ctx<'a> {
    pub(crate) async fn new(options: &'a BenchOptions) -> Result<Ctx<'a>> {
        let hasher = Hasher::new(1).await?;
        let password_hash = hasher.hash(&Secret::new(load::PASSWORD)).await?;
        let tag = crate::client::new_send_key();
        Ok(Ctx {
            options,
            machine: Machine::detect(),
            password_hash,
            // The key's last digits are its random part (it starts with the time).
            tag: tag[tag.len() - 6..].to_string(),
            next_prefix: AtomicUsize::new(0),
        })
    }

    /// A fresh account-name prefix (`b<tag><n>`); names are `<prefix>-<role><i>`.
    pub fn prefix(&self) -> String {
        let n = self.next_prefix.fetch_add(1, Ordering::Relaxed);
        format!("b{}{n}", self.tag)
    }

    /// The server a scenario drives: a fresh in-process one, or the `--server`.
    pub async fn target(&self) -> Result<Target> {
        match &self.options.target {
            TargetSpec::InProcess { .. } => Target::in_process(self.options.durability, None).await,
            TargetSpec::External { addr, pin, db, pid } => {
                Ok(Target::external(addr.clone(), *pin, db.clone(), *pid))
            }
        }
    }

    /// A progress bar on standard error (hidden when that is not a terminal).
    pub fn progress(&self, scenario: &str, len: Option<u64>) -> ProgressBar {
        let bar = match len {
            Some(len) => ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = if len.is_some() {
            "{prefix:>12} [{bar:30}] {elapsed:>4} {wide_msg}"
        } else {
            "{prefix:>12} {spinner} {elapsed:>4} {wide_msg}"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(scenario.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}
