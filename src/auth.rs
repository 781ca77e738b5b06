//! Authentication: argon2id password hashing on a pool of low-priority threads, session
//! tokens, and login throttling.
//!
//! This is the only module that can construct an [`AuthedUser`]; request handlers that need
//! an identity take one as a parameter, so nothing can be served before login by mistake.
//! Argon2 never runs on a runtime worker thread: every hash and verify goes to the
//! [`Hasher`]'s own threads (one per core, `SCHED_IDLE`) behind a semaphore, so a flood of
//! logins queues, and whatever argon2 does run yields the CPU to message delivery. Failed
//! logins are throttled per account, per address and server-wide (a budget of failed
//! password checks, taken before hashing and given back on success). A login that presents
//! a valid [`proof`] for its account is exempt from those budgets and has a small failure
//! budget of its own, so a flood of wrong guesses cannot lock the account's owner out.
//! Unknown users are verified against a dummy hash so that "no such user" and "wrong
//! password" cost the same and answer the same.

pub mod proof;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::bucket::TokenBucket;
use crate::ids::{DeviceId, UserId};
use crate::protocol::{Secret, Username};
use crate::store::{Credentials, Store, StoreError};
use proof::{ProofKey, ProofNonce, ValidProof, PROOF_FAILURE_BUDGET};

/// argon2id memory cost in KiB (OWASP minimum: 19 MiB).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
/// argon2id iterations (OWASP minimum: 2).
pub const ARGON2_T: u32 = 2;
/// argon2id parallelism.
pub const ARGON2_P: u32 = 1;
/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password, in bytes (bounds the hashing work per attempt).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Failed logins per account allowed before backoff starts.
pub const FREE_FAILURES_PER_ACCOUNT: u32 = 5;
/// Failed logins per source address allowed before backoff starts.
pub const FREE_FAILURES_PER_ADDRESS: u32 = 20;
/// First backoff delay; it doubles with every further failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest backoff delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);
/// A throttle entry is forgotten this long after its last failure.
const THROTTLE_MEMORY: Duration = Duration::from_secs(60 * 60);
/// Most throttle entries kept; the oldest quiet ones are dropped beyond this.
const THROTTLE_MAX_ENTRIES: usize = 100_000;

/// Errors a login or token check can end in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid user name or password")]
    InvalidCredentials,
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("the session token is invalid or was revoked")]
    InvalidToken,
    #[error("too many failed attempts; retry in {} s", .retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("password must be at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error("password must be at most {MAX_PASSWORD_BYTES} bytes")]
    PasswordTooLong,
    #[error(
        "this account already has {max} logged-in devices, the most allowed; log one out \
         (`chat logout` on it, or `chatd user revoke`)"
    )]
    TooManyDevices { max: u32 },
    #[error("password hashing failed")]
    Hashing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An authenticated connection's identity. Only this module can make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthedUser {
    user_id: UserId,
    name: Username,
    device_id: DeviceId,
}

impl AuthedUser {
    /// The account's id.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }
    /// The account's (normalised) name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
    /// The device (login) this connection authenticated as.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }
}

/// argon2id hashing on `parallel` threads of its own, which run at the lowest CPU priority
/// (`SCHED_IDLE` on Linux). With nothing else to do they use every core, so logins are as
/// fast as the hash allows; when messages are flowing, a delivery thread takes the core at
/// once, so a burst of password checks, a flood of guesses among them, cannot stall
/// connected users. The price: on a server whose cores are saturated by message traffic, a
/// password login waits for a free moment (token logins do not hash).
#[derive(Clone)]
pub struct Hasher {
    pool: Arc<HashPool>,
    dummy_hash: Arc<str>,
}

/// A job for the hashing threads.
type HashJob = Box<dyn FnOnce() + Send>;

/// The hashing threads and the queue to them. Dropping it ends the threads.
struct HashPool {
    permits: Semaphore,
    /// Bounded by `parallel`; the semaphore admits no more jobs than that, so `send` never
    /// waits.
    jobs: std::sync::mpsc::SyncSender<HashJob>,
}

impl HashPool {
    fn start(parallel: usize) -> Result<HashPool, AuthError> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<HashJob>(parallel);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..parallel {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("chatd-argon2-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|_| AuthError::Hashing)?;
        }
        Ok(HashPool {
            permits: Semaphore::new(parallel),
            jobs,
        })
    }

    /// Runs `job` on a hashing thread once one is free.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AuthError::Hashing)?;
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(job());
            }))
            .map_err(|_| AuthError::Hashing)?;
        result.await.map_err(|_| AuthError::Hashing)
    }
}

/// Lowers the calling thread's CPU priority. On Linux the hashing threads use `SCHED_IDLE`:
/// they run only when no ordinary thread wants the CPU, and a woken delivery thread takes
/// the core at once (nice +19 still let a 16 ms hash finish its slice first). Elsewhere, or
/// if that is refused, the lowest nice value. Best effort: a failure means equal priority.
fn lower_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    let idle = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    if let Err(e) = idle {
        tracing::debug!(error = ?e, "SCHED_IDLE refused for a hashing thread; using nice");
        #[cfg(target_os = "linux")]
        if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
            tracing::debug!(error = %e, "cannot lower the priority of a hashing thread");
        }
    }
}

impl Hasher {
    /// A hasher running at most `parallel` argon2 jobs at once.
    pub async fn new(parallel: usize) -> Result<Hasher, AuthError> {
        let pool = Arc::new(HashPool::start(parallel.max(1))?);
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let dummy_pw = Secret::new(hex::encode(salt));
        let dummy_hash = pool.run(move || hash_now(&dummy_pw)).await??;
        Ok(Hasher {
            pool,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Hashes a new password after checking its length.
    pub async fn hash(&self, password: &Secret) -> Result<String, AuthError> {
        check_password_policy(password)?;
        let pw = password.clone();
        self.pool.run(move || hash_now(&pw)).await?
    }

    /// Verifies a password against a stored hash, or against the dummy hash when there is
    /// none (so that unknown accounts cost the same). Returns false in the dummy case.
    pub async fn verify(&self, hash: Option<&str>, password: &Secret) -> Result<bool, AuthError> {
        let real = hash.is_some();
        let hash: String = hash.unwrap_or(&self.dummy_hash).to_string();
        let pw = password.clone();
        let ok = self
            .pool
            .run(move || {
                let Ok(parsed) = PasswordHash::new(&hash) else {
                    return false;
                };
                argon2()
                    .verify_password(pw.expose().as_bytes(), &parsed)
                    .is_ok()
            })
            .await?;
        Ok(ok && real)
    }
}

/// Refuses passwords outside the accepted length range.
pub fn check_password_policy(password: &Secret) -> Result<(), AuthError> {
    if password.expose().chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::PasswordTooShort);
    }
    if password.expose().len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::PasswordTooLong);
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    // The constants are within argon2's documented ranges, so `Params::new` cannot fail.
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None).expect("valid argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(password: &Secret) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|_| AuthError::Hashing)?;
    argon2()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| AuthError::Hashing)
}

/// A fresh session token (256 random bits, base64url) and the hash under which it is stored.
pub fn new_token() -> (Secret, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = hash_token(&token);
    (Secret::new(token), hash)
}

/// The stored form of a token: its SHA-256.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Login and token checks against the store, with throttling.
#[derive(Clone)]
pub struct Auth {
    store: Store,
    hasher: Hasher,
    limits: AuthLimits,
    throttle: Arc<Mutex<Throttle>>,
    /// Password checks that may fail, server-wide: taken before hashing, given back on
    /// success. Bounds the argon2 work that failed logins from everywhere (loopback and
    /// many addresses included) can cost, so they cannot starve message delivery.
    failures: Arc<Mutex<TokenBucket>>,
    /// Signs and checks login proofs.
    proof_key: ProofKey,
    /// Proofs with password checks in flight or failures on record, by nonce. The store
    /// keeps the failure counts across restarts; this map makes the budget exact under
    /// concurrent attempts with one proof (a check is counted before it hashes).
    proof_uses: Arc<Mutex<HashMap<ProofNonce, ProofUse>>>,
}

/// Most proofs with failures kept in memory; expired ones are dropped beyond this.
const PROOF_USES_MAX: usize = 10_000;

/// What one proof has used of its failure budget.
#[derive(Debug, Clone, Copy)]
struct ProofUse {
    failures: u32,
    in_flight: u32,
    expires_at: i64,
}

/// A successful password login: the device, its token, and a fresh login proof for the
/// client to present next time.
#[derive(Debug)]
pub struct LoginGrant {
    pub user: AuthedUser,
    pub token: Secret,
    pub proof: Secret,
}

/// Server-wide login limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Sustained failed logins per second, server-wide, before `rate_limited`.
    pub failed_logins_per_sec: u32,
    /// Failed logins allowed at once above the sustained rate.
    pub failed_login_burst: u32,
    /// Most devices (sessions) one account may have; a further login is refused.
    pub max_devices_per_account: u32,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            failed_logins_per_sec: 10,
            failed_login_burst: 20,
            max_devices_per_account: 100,
        }
    }
}

impl Auth {
    /// Builds the authenticator; `proof_key` signs login proofs (the store keeps it).
    pub fn new(store: Store, hasher: Hasher, limits: AuthLimits, proof_key: ProofKey) -> Auth {
        Auth {
            store,
            hasher,
            limits,
            throttle: Arc::new(Mutex::new(Throttle::default())),
            failures: Arc::new(Mutex::new(TokenBucket::new(
                limits.failed_logins_per_sec,
                limits.failed_login_burst,
            ))),
            proof_key,
            proof_uses: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Password login from `peer`, trusted when `proof` is a valid login proof for the
    /// account. On success a new device is registered and its token returned (the token is
    /// shown once; only its hash is stored), with a fresh proof.
    pub async fn login(
        &self,
        user: &str,
        password: &Secret,
        proof: Option<&Secret>,
        device_name: &str,
        peer: IpAddr,
    ) -> Result<LoginGrant, AuthError> {
        let creds = self.check_password(user, password, proof, peer).await?;
        let proof = self
            .proof_key
            .issue(creds.user_id, creds.name.as_str(), proof::unix_now());
        let (token, hash) = new_token();
        let device_name: String = device_name.chars().take(64).collect();
        let max = self.limits.max_devices_per_account;
        let device_id = self
            .store
            .create_device_capped(creds.user_id, &hash, &device_name, max)
            .await?
            .ok_or(AuthError::TooManyDevices { max })?;
        Ok(LoginGrant {
            user: AuthedUser {
                user_id: creds.user_id,
                name: creds.name,
                device_id,
            },
            token,
            proof,
        })
    }

    /// Password login for the IRC gateway: the same check, throttling and errors as
    /// [`Auth::login`], but the connection is the account's IRC device named `device`
    /// (created on first use within the same device limit, then kept with its cursor), and
    /// no token or proof is issued (IRC clients could not keep a proof).
    pub async fn login_irc(
        &self,
        user: &str,
        password: &Secret,
        device: &str,
        peer: IpAddr,
    ) -> Result<AuthedUser, AuthError> {
        let creds = self.check_password(user, password, None, peer).await?;
        // The device cannot be resumed by token: it is reached only by password.
        let (_, unused_token_hash) = new_token();
        let max = self.limits.max_devices_per_account;
        let device_id = self
            .store
            .irc_device(creds.user_id, device, &unused_token_hash, max)
            .await?
            .ok_or(AuthError::TooManyDevices { max })?;
        Ok(AuthedUser {
            user_id: creds.user_id,
            name: creds.name,
            device_id,
        })
    }

    /// Checks a password with throttling; the account's credentials when it is right and the
    /// account enabled. A valid, not yet void proof for the account takes the trusted path;
    /// any other proof is ignored and the attempt is untrusted.
    async fn check_password(
        &self,
        user: &str,
        password: &Secret,
        proof: Option<&Secret>,
        peer: IpAddr,
    ) -> Result<Credentials, AuthError> {
        let name = Username::parse(user).ok();
        if let (Some(name), Some(proof)) = (&name, proof) {
            // The MAC check touches no table, so a proof that is not valid for this name
            // costs the same whether or not the account exists.
            if let Some(valid) =
                self.proof_key
                    .check(proof.expose(), name.as_str(), proof::unix_now())
            {
                if let Some(outcome) = self.check_trusted(name, password, valid).await? {
                    return outcome;
                }
            }
        }
        // A name that cannot exist has no account to protect: it is throttled by address only,
        // and never grows the table with attacker-chosen keys.
        let account_key = match &name {
            Some(n) => format!("u:{n}"),
            None => "u:".to_string(),
        };
        // Loopback is not throttled by address: behind a local reverse proxy every client
        // is 127.0.0.1, and one guesser would lock everyone out. Accounts stay throttled.
        let address_key = if peer.is_loopback() {
            String::new()
        } else {
            format!("a:{}", address_bucket(peer))
        };
        if let Some(retry_after) = self.throttled(&account_key, &address_key) {
            return Err(AuthError::RateLimited { retry_after });
        }
        self.lock_failures()
            .take()
            .map_err(|retry_after| AuthError::RateLimited { retry_after })?;
        let creds = match &name {
            Some(name) => self.store.credentials(name).await?,
            None => None,
        };
        let ok = if password.expose().len() > MAX_PASSWORD_BYTES {
            false
        } else {
            self.hasher
                .verify(creds.as_ref().map(|c| c.password_hash.as_str()), password)
                .await?
        };
        let Some(creds) = creds.filter(|_| ok) else {
            self.record_failure(&account_key, &address_key);
            return Err(AuthError::InvalidCredentials);
        };
        self.record_success(&account_key);
        self.lock_failures().refund();
        if creds.disabled {
            return Err(AuthError::AccountDisabled);
        }
        Ok(creds)
    }

    /// The trusted path: a password check that takes none of the untrusted budgets, only one
    /// of the proof's own failures. `None` when the proof does not apply (the account was
    /// deleted and its name reused, or the proof is void): the caller goes on untrusted.
    async fn check_trusted(
        &self,
        name: &Username,
        password: &Secret,
        proof: ValidProof,
    ) -> Result<Option<Result<Credentials, AuthError>>, AuthError> {
        let Some(creds) = self.store.credentials(name).await? else {
            return Ok(None);
        };
        if creds.user_id != proof.user_id {
            return Ok(None);
        }
        // Loaded before the lock (a store read cannot wait under a std mutex); an entry
        // already in memory is newer and wins.
        let known = self.lock_proof_uses().contains_key(&proof.nonce);
        let stored = if known {
            0
        } else {
            self.store.proof_failures(&proof.nonce).await?
        };
        {
            let mut uses = self.lock_proof_uses();
            if uses.len() >= PROOF_USES_MAX && !uses.contains_key(&proof.nonce) {
                let now = proof::unix_now();
                uses.retain(|_, u| u.in_flight > 0 || u.expires_at > now);
            }
            let u = uses.entry(proof.nonce).or_insert(ProofUse {
                failures: stored,
                in_flight: 0,
                expires_at: proof.expires_at,
            });
            if u.failures + u.in_flight >= PROOF_FAILURE_BUDGET {
                return Ok(None);
            }
            u.in_flight += 1;
        }
        let verified = if password.expose().len() > MAX_PASSWORD_BYTES {
            Ok(false)
        } else {
            self.hasher
                .verify(Some(creds.password_hash.as_str()), password)
                .await
        };
        let failures = {
            let mut uses = self.lock_proof_uses();
            let Some(u) = uses.get_mut(&proof.nonce) else {
                // Only this function removes entries, and not while one is in flight.
                return Err(AuthError::Hashing);
            };
            u.in_flight -= 1;
            match verified {
                Ok(true) => {
                    if u.failures == 0 && u.in_flight == 0 {
                        uses.remove(&proof.nonce);
                    }
                    None
                }
                Ok(false) => {
                    u.failures += 1;
                    Some(u.failures)
                }
                Err(e) => return Err(e),
            }
        };
        match failures {
            None if creds.disabled => Ok(Some(Err(AuthError::AccountDisabled))),
            None => Ok(Some(Ok(creds))),
            Some(failures) => {
                if failures >= PROOF_FAILURE_BUDGET {
                    tracing::info!(user = %creds.name, "login proof void after failed passwords");
                }
                self.store
                    .set_proof_failures(&proof.nonce, failures, proof.expires_at, proof::unix_now())
                    .await?;
                Ok(Some(Err(AuthError::InvalidCredentials)))
            }
        }
    }

    /// Authenticates with a session token.
    pub async fn resume(&self, token: &Secret) -> Result<AuthedUser, AuthError> {
        let record = self
            .store
            .device_by_token(&hash_token(token.expose()))
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if record.disabled {
            return Err(AuthError::AccountDisabled);
        }
        Ok(AuthedUser {
            user_id: record.user_id,
            name: record.user_name,
            device_id: record.device_id,
        })
    }

    /// Revokes the device of an authenticated connection.
    pub async fn logout(&self, user: &AuthedUser) -> Result<(), AuthError> {
        self.store.delete_device(user.device_id).await?;
        Ok(())
    }

    fn lock_proof_uses(&self) -> std::sync::MutexGuard<'_, HashMap<ProofNonce, ProofUse>> {
        self.proof_uses.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn throttled(&self, account_key: &str, address_key: &str) -> Option<Duration> {
        let throttle = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        [account_key, address_key]
            .iter()
            .filter_map(|k| throttle.blocked_for(k, now))
            .max()
    }

    fn record_failure(&self, account_key: &str, address_key: &str) {
        let mut throttle = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        throttle.fail(account_key, FREE_FAILURES_PER_ACCOUNT, now);
        if !address_key.is_empty() {
            throttle.fail(address_key, FREE_FAILURES_PER_ADDRESS, now);
        }
    }

    fn record_success(&self, account_key: &str) {
        let mut throttle = self.throttle.lock().unwrap_or_else(|p| p.into_inner());
        throttle.entries.remove(account_key);
    }
}

/// IPv4 addresses are counted one by one; IPv6 by /64, the usual allocation to one host.
pub(crate) fn address_bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Failure counters with exponential backoff.
#[derive(Default)]
struct Throttle {
    entries: HashMap<String, ThrottleEntry>,
}

struct ThrottleEntry {
    failures: u32,
    blocked_until: Instant,
    last_failure: Instant,
}

impl Throttle {
    fn blocked_for(&self, key: &str, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        (e.blocked_until > now).then(|| e.blocked_until - now)
    }

    fn fail(&mut self, key: &str, free: u32, now: Instant) {
        if self.entries.len() >= THROTTLE_MAX_ENTRIES && !self.entries.contains_key(key) {
            self.entries
                .retain(|_, e| now.duration_since(e.last_failure) < THROTTLE_MEMORY / 4);
            if self.entries.len() >= THROTTLE_MAX_ENTRIES {
                // Under a wide attack keep only what currently blocks someone.
                self.entries.retain(|_, e| e.blocked_until > now);
            }
            if self.entries.len() >= THROTTLE_MAX_ENTRIES {
                return;
            }
        }
        let e = self
            .entries
            .entry(key.to_string())
            .or_insert(ThrottleEntry {
                failures: 0,
                blocked_until: now,
                last_failure: now,
            });
        if now.duration_since(e.last_failure) > THROTTLE_MEMORY {
            e.failures = 0;
        }
        e.failures += 1;
        e.last_failure = now;
        if e.failures > free {
            let exp = (e.failures - free - 1).min(20);
            let delay = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
            e.blocked_until = now + delay;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_free_failures_and_doubles() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES_PER_ACCOUNT {
            t.fail("u:x", FREE_FAILURES_PER_ACCOUNT, now);
        }
        assert_eq!(t.blocked_for("u:x", now), None);
        t.fail("u:x", FREE_FAILURES_PER_ACCOUNT, now);
        assert_eq!(t.blocked_for("u:x", now), Some(BACKOFF_BASE));
        t.fail("u:x", FREE_FAILURES_PER_ACCOUNT, now);
        assert_eq!(t.blocked_for("u:x", now), Some(BACKOFF_BASE * 2));
        for _ in 0..40 {
            t.fail("u:x", FREE_FAILURES_PER_ACCOUNT, now);
        }
        assert_eq!(t.blocked_for("u:x", now), Some(BACKOFF_MAX));
    }

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let (a, ha) = new_token();
        let (b, hb) = new_token();
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert!(a.expose().len() >= 43);
        assert_eq!(hash_token(a.expose()), ha);
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(matches!(
            check_password_policy(&Secret::new("1234567")),
            Err(AuthError::PasswordTooShort)
        ));
        assert!(check_password_policy(&Secret::new("12345678")).is_ok());
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_do() {
        let h = Hasher::new(1).await.unwrap();
        let pw = Secret::new("correct horse");
        let hash = h.hash(&pw).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(h.verify(Some(&hash), &pw).await.unwrap());
        assert!(!h
            .verify(Some(&hash), &Secret::new("wrong horse"))
            .await
            .unwrap());
        assert!(!h.verify(None, &pw).await.unwrap());
    }
}
