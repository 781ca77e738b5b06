//! What every scenario shares: the options, the machine, one password hash for every
//! account, fresh account names, the backend it runs on, the server to drive and a progress
//! bar.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::auth::Hasher;
use crate::protocol::Secret;

use super::load;
use super::options::{Backend, BenchOptions, TargetSpec};
use super::pgadmin::{PgAdmin, PgServer, ScratchDb};
use super::report::Machine;
use super::target::Target;

/// What every scenario shares: the options, one password hash, unique account names, the
/// backend of the servers it starts.
#[derive(Clone)]
pub(crate) struct Ctx<'a> {
    pub options: &'a BenchOptions,
    pub machine: Machine,
    /// The argon2id hash of [`load::PASSWORD`], made once for every account.
    pub password_hash: String,
    /// The database of the in-process servers this scenario starts.
    pub backend: Backend,
    /// What the `--pg` cluster said of itself at the start of the run.
    pub pg_server: Option<PgServer>,
    /// Random per run, so that names never collide on an existing server.
    tag: String,
    next_prefix: Arc<AtomicUsize>,
}

impl<'a> Ctx<'a> {
    /// The run's context, on the first backend; reads the `--pg` cluster (refusing one the
    /// bench cannot reach or create databases in).
    pub(crate) async fn new(options: &'a BenchOptions) -> Result<Ctx<'a>> {
        let pg_server = match &options.pg {
            Some(admin) => Some(admin.probe().await?),
            None => None,
        };
        let hasher = Hasher::new(1).await?;
        let password_hash = hasher.hash(&Secret::new(load::PASSWORD)).await?;
        let tag = crate::client::new_send_key();
        Ok(Ctx {
            options,
            machine: Machine::detect(),
            password_hash,
            backend: options.backends.first().copied().unwrap_or(Backend::Sqlite),
            pg_server,
            // The key's last digits are its random part (it starts with the time).
            tag: tag[tag.len() - 6..].to_string(),
            next_prefix: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The same context for scenarios on `backend` (names stay unique across both).
    pub fn on(&self, backend: Backend) -> Ctx<'a> {
        Ctx {
            backend,
            ..self.clone()
        }
    }

    /// The `--pg` cluster.
    pub fn pg(&self) -> Result<&PgAdmin> {
        self.options
            .pg
            .as_ref()
            .context("the postgres backend needs --pg postgres://USER@HOST:PORT/DB")
    }

    /// A fresh database in the `--pg` cluster.
    pub async fn scratch_db(&self) -> Result<ScratchDb> {
        self.pg()?.create(&self.tag).await
    }

    /// A fresh account-name prefix (`b<tag><n>`); names are `<prefix>-<role><i>`.
    pub fn prefix(&self) -> String {
        let n = self.next_prefix.fetch_add(1, Ordering::Relaxed);
        format!("b{}{n}", self.tag)
    }

    /// The server a scenario drives: a fresh in-process one on this context's backend, or
    /// the `--server`.
    pub async fn target(&self) -> Result<Target> {
        let durability = self.options.durability;
        match &self.options.target {
            TargetSpec::InProcess { .. } => match self.backend {
                Backend::Sqlite => Target::in_process(durability, None, None).await,
                Backend::Postgres => {
                    let scratch = self.scratch_db().await?;
                    Target::in_process(durability, None, Some(scratch)).await
                }
            },
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
