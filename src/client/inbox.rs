//! One device's delivery loop, shared by `chat recv` and the TUI: resume from the cursor,
//! drop what was seen already, record what was shown, then acknowledge it.
//!
//! An [`Inbox`] owns the saved login it started with and, across every connection it makes,
//! the numbers that make delivery exactly-once as the user sees it ([`Marks`], pure and
//! tested on their own). Its front end pulls [`InboxEvent`]s with [`Inbox::next`] and says
//! what it has shown with [`Inbox::show`]; the inbox does the rest:
//!
//! - connects with the saved token, subscribes, and on a transient loss reconnects with
//!   backoff (0.5 s doubling to 30 s, plus up to a quarter at random); delivery resumes from
//!   the device's cursor, so nothing is missed;
//! - drops every pushed message at or below the highest id already passed on, or recorded
//!   in `session.json` (`last_seen`) for this login when the connection started;
//! - records `last_seen` *before* acknowledging (on the blocking pool: the file is locked
//!   and synced), so a crash never loses the dedupe mark of what the server forgot;
//! - acknowledges at most what this connection can vouch for (its cursor or the highest id
//!   pushed on it), one acknowledgement in flight at a time, so a burst costs one round trip;
//! - pings every 30 s (the server drops connections idle for 120 s).
//!
//! [`Inbox::next`] is cancel-safe: everything in progress (a connection attempt, a backoff
//! wait, a record-then-ack, a ping) lives in the inbox, so a front end can `select!` on it
//! beside its own input and lose nothing when that input wins.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::{Interval, Sleep};

use super::state::{ChatHome, SavedLogin, SavedSession, StateError};
use super::{Client, ClientError, Connection, Event};
use crate::protocol::{ErrorCode, Message, UnreadInfo};

/// Keepalive period (the server drops connections idle for 120 s).
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// First reconnect delay; doubles per failed attempt.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Longest reconnect delay. A connection that stayed up this long resets the backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the inbox reports to its front end.
pub enum InboxEvent {
    /// Connection attempt `attempt` (1 is the first since the last good connection) starts.
    Connecting { attempt: u32 },
    /// Connected, authenticated and subscribed. `client` makes other requests on this
    /// connection; `unread` holds the counts fetched just before subscribing when
    /// [`Inbox::with_unread`] asked for them.
    Connected {
        client: Client,
        unread: Option<Vec<UnreadInfo>>,
    },
    /// A message not seen before on this device. Call [`Inbox::show`] once it is shown.
    Message(Message),
    /// The backlog has been delivered; what follows is live.
    CaughtUp,
    /// Another device of this user moved a read marker.
    ReadMarker { conversation: String, upto: i64 },
    /// Caught up, nothing waiting, and everything shown is recorded and acknowledged.
    /// Reported once each time that becomes true.
    Idle,
    /// Recording or acknowledging what was shown failed; the connection stays up. After a
    /// failed record nothing is acknowledged until more has been shown.
    CommitFailed(CommitError),
    /// The connection is lost (or could not be made); the next attempt is in `retry_in`.
    Disconnected {
        error: ClientError,
        retry_in: Duration,
    },
    /// Another attempt cannot help (the key changed, the session is gone): the inbox is
    /// finished and [`Inbox::next`] never returns again.
    Ended(ClientError),
}

/// Why what was shown could not be recorded or acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// `last_seen` could not be written; nothing was acknowledged.
    #[error(transparent)]
    Record(StateError),
    /// The server did not take the acknowledgement.
    #[error(transparent)]
    Ack(ClientError),
}

/// The delivery loop of the saved login it was made with.
pub struct Inbox {
    home: ChatHome,
    login: SavedLogin,
    unread_first: bool,
    marks: Marks,
    /// The number of the current connection attempt since the last good connection.
    attempt: u32,
    phase: Phase,
}

/// A boxed future the inbox keeps between calls to [`Inbox::next`].
type Task<T> = Pin<Box<dyn Future<Output = T> + Send>>;

enum Phase {
    /// About to connect.
    Start,
    Connecting(Task<Result<Started, ClientError>>),
    /// Waiting out the backoff before the next attempt.
    Waiting(Pin<Box<Sleep>>),
    Up(Box<Up>),
    Ended,
}

/// A connection that got as far as `subscribed`.
struct Started {
    client: Client,
    events: mpsc::Receiver<Event>,
    unread: Option<Vec<UnreadInfo>>,
    /// `last_seen` in `session.json` for this login, when it could be read.
    recorded: Option<i64>,
    cursor: i64,
}

/// One subscribed connection.
struct Up {
    client: Client,
    events: mpsc::Receiver<Event>,
    since: Instant,
    caught_up: bool,
    /// True once [`InboxEvent::Idle`] was reported and nothing happened since.
    idle: bool,
    ping: Interval,
    pong: Option<Task<Result<(), ClientError>>>,
    /// The record-then-ack in flight, for the id it commits.
    commit: Option<Task<(i64, Commit)>>,
}

/// How one record-then-ack ended.
enum Commit {
    Acked { cursor: i64 },
    NotRecorded(StateError),
    Refused(ClientError),
    Lost(ClientError),
}

/// What a step of the loop decided, applied once the phase is no longer borrowed.
enum Step {
    Report(InboxEvent),
    Lost(ClientError),
    Again,
}

impl Inbox {
    /// An inbox for `login`, recording in `home`. Nothing happens until [`Inbox::next`].
    pub fn new(home: ChatHome, login: SavedLogin) -> Inbox {
        let marks = Marks::new(login.session.last_seen);
        Inbox {
            home,
            login,
            unread_first: false,
            marks,
            attempt: 0,
            phase: Phase::Start,
        }
    }

    /// Also fetches the unread counts on every connection, just before subscribing: a
    /// message committed in between is then both in the backlog and newer than the counts,
    /// so it is counted exactly once.
    pub fn with_unread(mut self) -> Inbox {
        self.unread_first = true;
        self
    }

    /// The login this inbox uses, as it was saved when it started.
    pub fn session(&self) -> &SavedSession {
        &self.login.session
    }

    /// Everything up to `upto` has been shown to the user: it may be recorded and
    /// acknowledged (as far as the connection can vouch for it).
    pub fn show(&mut self, upto: i64) {
        self.marks.show(upto);
    }

    /// The next thing to report. Cancel-safe.
    pub async fn next(&mut self) -> InboxEvent {
        loop {
            let step = match &mut self.phase {
                Phase::Start => {
                    self.attempt += 1;
                    let start = start(self.home.clone(), self.login.clone(), self.unread_first);
                    self.phase = Phase::Connecting(Box::pin(start));
                    Step::Report(InboxEvent::Connecting {
                        attempt: self.attempt,
                    })
                }
                Phase::Connecting(connecting) => match connecting.await {
                    Ok(started) => {
                        self.marks.resume(started.recorded, started.cursor);
                        let mut ping = tokio::time::interval(PING_EVERY);
                        ping.reset();
                        let client = started.client.clone();
                        self.phase = Phase::Up(Box::new(Up {
                            client: started.client,
                            events: started.events,
                            since: Instant::now(),
                            caught_up: false,
                            idle: false,
                            ping,
                            pong: None,
                            commit: None,
                        }));
                        Step::Report(InboxEvent::Connected {
                            client,
                            unread: started.unread,
                        })
                    }
                    Err(error) => Step::Lost(error),
                },
                Phase::Waiting(sleep) => {
                    sleep.as_mut().await;
                    self.phase = Phase::Start;
                    Step::Again
                }
                Phase::Up(up) => {
                    up.step(&self.home, &self.login.session, &mut self.marks)
                        .await
                }
                Phase::Ended => std::future::pending().await,
            };
            match step {
                Step::Report(event) => return event,
                Step::Lost(error) => return self.lose(error),
                Step::Again => {}
            }
        }
    }

    /// Waits for the record-then-ack in flight and commits whatever else has been shown;
    /// for the way out (the user quit). Returns at once when not connected.
    pub async fn flush(&mut self) -> Result<(), CommitError> {
        let Phase::Up(up) = &mut self.phase else {
            return Ok(());
        };
        loop {
            if let Some(commit) = up.commit.take() {
                let (upto, done) = commit.await;
                match done {
                    Commit::Acked { cursor } => self.marks.acked(cursor),
                    Commit::NotRecorded(e) => {
                        self.marks.record_failed(upto);
                        return Err(CommitError::Record(e));
                    }
                    Commit::Refused(e) => {
                        self.marks.acked(upto);
                        return Err(CommitError::Ack(e));
                    }
                    Commit::Lost(e) => return Err(CommitError::Ack(e)),
                }
            }
            match self.marks.to_ack() {
                Some(upto) => {
                    up.commit = Some(up.commit_task(&self.home, &self.login.session, upto))
                }
                None => return Ok(()),
            }
        }
    }

    /// The connection is gone: wait and retry, or end when no retry can help.
    fn lose(&mut self, error: ClientError) -> InboxEvent {
        if let Phase::Up(up) = &self.phase {
            if up.since.elapsed() >= BACKOFF_MAX {
                self.attempt = 0;
            }
        }
        if is_final(&error) {
            self.phase = Phase::Ended;
            return InboxEvent::Ended(error);
        }
        let retry_in = backoff(self.attempt.max(1));
        self.phase = Phase::Waiting(Box::pin(tokio::time::sleep(retry_in)));
        InboxEvent::Disconnected { error, retry_in }
    }
}

impl Up {
    /// One step on a subscribed connection: start a commit when one is due, report idleness,
    /// else wait for the connection, the commit, the ping, or the next push.
    async fn step(&mut self, home: &ChatHome, session: &SavedSession, marks: &mut Marks) -> Step {
        if self.commit.is_none() {
            if let Some(upto) = marks.to_ack() {
                self.commit = Some(self.commit_task(home, session, upto));
            }
        }
        if self.caught_up && !self.idle && self.commit.is_none() && self.events.is_empty() {
            self.idle = true;
            return Step::Report(InboxEvent::Idle);
        }
        tokio::select! {
            biased;
            (upto, done) = in_flight(&mut self.commit) => {
                self.commit = None;
                self.idle = false;
                match done {
                    Commit::Acked { cursor } => {
                        marks.acked(cursor);
                        Step::Again
                    }
                    Commit::NotRecorded(e) => {
                        marks.record_failed(upto);
                        Step::Report(InboxEvent::CommitFailed(CommitError::Record(e)))
                    }
                    Commit::Refused(e) => {
                        // Not retried: the same acknowledgement would be refused again.
                        marks.acked(upto);
                        Step::Report(InboxEvent::CommitFailed(CommitError::Ack(e)))
                    }
                    Commit::Lost(e) => Step::Lost(e),
                }
            }
            pong = in_flight(&mut self.pong) => {
                self.pong = None;
                match pong {
                    Ok(()) => Step::Again,
                    Err(e) => Step::Lost(e),
                }
            }
            event = self.events.recv() => {
                self.idle = false;
                match event {
                    Some(Event::Message(m)) => {
                        if marks.receive(m.id) {
                            Step::Report(InboxEvent::Message(m))
                        } else {
                            Step::Again
                        }
                    }
                    Some(Event::CaughtUp { .. }) => {
                        self.caught_up = true;
                        Step::Report(InboxEvent::CaughtUp)
                    }
                    Some(Event::ReadMarker { conversation, upto }) => {
                        Step::Report(InboxEvent::ReadMarker { conversation, upto })
                    }
                    Some(Event::Closed(reason)) => Step::Lost(ClientError::Closed(reason)),
                    None => Step::Lost(ClientError::Closed(None)),
                }
            }
            _ = self.ping.tick() => {
                if self.pong.is_none() {
                    let client = self.client.clone();
                    self.pong = Some(Box::pin(async move { client.ping().await }));
                }
                Step::Again
            }
        }
    }

    /// Records `upto` as `last_seen` for `session`, then acknowledges it: in that order, and
    /// the acknowledgement only once the record is on disk.
    fn commit_task(
        &self,
        home: &ChatHome,
        session: &SavedSession,
        upto: i64,
    ) -> Task<(i64, Commit)> {
        let (home, session, client) = (home.clone(), session.clone(), self.client.clone());
        Box::pin(async move {
            // Raised under the session lock, never lowered, and only while this login is the
            // saved one: a concurrent `chat recv`, the TUI or a new login is not undone.
            let recorded = tokio::task::spawn_blocking({
                let home = home.clone();
                move || home.raise_last_seen(&session, upto)
            })
            .await;
            match recorded {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return (upto, Commit::NotRecorded(e)),
                Err(e) => {
                    let error = StateError::Io {
                        path: home.dir().join("session.json").display().to_string(),
                        error: std::io::Error::other(e),
                    };
                    return (upto, Commit::NotRecorded(error));
                }
            }
            let done = match client.ack(upto).await {
                Ok(cursor) => Commit::Acked { cursor },
                Err(e) if e.is_transient() || matches!(e, ClientError::Closed(_)) => {
                    Commit::Lost(e)
                }
                Err(e) => Commit::Refused(e),
            };
            (upto, done)
        })
    }
}

/// The future in `slot`, or one that never completes when there is none.
async fn in_flight<T>(slot: &mut Option<Task<T>>) -> T {
    match slot {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Connects, authenticates with the saved token, optionally fetches unread counts, reads
/// this login's `last_seen` again (another process on this device may have raised it), and
/// subscribes.
async fn start(
    home: ChatHome,
    login: SavedLogin,
    unread_first: bool,
) -> Result<Started, ClientError> {
    let conn = Connection::connect(&login.addr, login.pin).await?;
    conn.client.auth(&login.session.token).await?;
    let (client, events) = conn.split();
    let unread = if unread_first {
        Some(client.unread().await?)
    } else {
        None
    };
    let session = login.session;
    // Unreadable now is no reason to stay offline: the mark kept in memory still holds.
    let recorded = tokio::task::spawn_blocking(move || match home.load_session() {
        Ok(Some(saved)) if same_login(&saved, &session) => Some(saved.last_seen),
        _ => None,
    })
    .await
    .unwrap_or(None);
    let cursor = client.subscribe().await?;
    Ok(Started {
        client,
        events,
        unread,
        recorded,
        cursor,
    })
}

/// True when `a` and `b` are the same login (server, device and token).
fn same_login(a: &SavedSession, b: &SavedSession) -> bool {
    a.server == b.server && a.device_id == b.device_id && a.token == b.token
}

/// Errors that another attempt cannot fix: the key changed or is unknown, or the session is
/// gone (revoked, logged out, account disabled). Everything else is retried.
pub fn is_final(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::PinMismatch { .. } | ClientError::UnknownServer { .. }
    ) || matches!(
        e.code(),
        Some(ErrorCode::InvalidToken | ErrorCode::SessionRevoked | ErrorCode::AccountDisabled)
    )
}

/// The delay before attempt `attempt` (1-based): 0.5 s doubling to 30 s, plus up to a
/// quarter of it at random so many clients do not return in step.
pub fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let jitter = rand::random::<f64>() * 0.25;
    base.mul_f64(1.0 + jitter)
}

/// The numbers behind exactly-once delivery, and the rules that move them. No I/O: the
/// [`Inbox`] feeds them what happens and asks them what to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// Highest id passed on to the front end, or recorded as seen on this device: pushes at
    /// or below it are dropped.
    seen: i64,
    /// Highest id the front end has shown (a dropped push counts as shown).
    shown: i64,
    /// This connection: the larger of its subscribe cursor and the highest id pushed on it,
    /// the most an acknowledgement may name.
    pushed: i64,
    /// This connection: the device's cursor as last reported (or an acknowledgement the
    /// server refused, which is not tried again).
    acked: i64,
    /// This connection: the highest id whose record failed; not tried again until more is
    /// ready to acknowledge.
    failed: i64,
}

impl Marks {
    /// Marks for a login whose saved `last_seen` is `last_seen`, before any connection.
    pub fn new(last_seen: i64) -> Marks {
        Marks {
            seen: last_seen,
            ..Marks::default()
        }
    }

    /// A new connection subscribed at `cursor`; `recorded` is this login's `last_seen` as
    /// the file holds it now. What this process passed on stays seen.
    pub fn resume(&mut self, recorded: Option<i64>, cursor: i64) {
        self.seen = self.seen.max(recorded.unwrap_or(0));
        self.pushed = cursor;
        self.acked = cursor;
        self.failed = 0;
    }

    /// Message `id` was pushed on this connection; true when it is new and must be passed
    /// on, false when it was seen already (and so counts as shown).
    pub fn receive(&mut self, id: i64) -> bool {
        self.pushed = self.pushed.max(id);
        if id > self.seen {
            self.seen = id;
            true
        } else {
            self.shown = self.shown.max(id);
            false
        }
    }

    /// The front end has shown everything up to `upto`.
    pub fn show(&mut self, upto: i64) {
        self.shown = self.shown.max(upto);
    }

    /// What to record and then acknowledge now, if anything: what was shown, as far as
    /// this connection can vouch for it, when that is above the cursor.
    pub fn to_ack(&self) -> Option<i64> {
        let upto = self.shown.min(self.pushed);
        (upto > self.acked && upto > self.failed).then_some(upto)
    }

    /// The server reports the device's cursor at `cursor`.
    pub fn acked(&mut self, cursor: i64) {
        self.acked = self.acked.max(cursor);
    }

    /// Recording `upto` failed, so it was not acknowledged.
    pub fn record_failed(&mut self, upto: i64) {
        self.failed = self.failed.max(upto);
    }

    /// Highest id passed on or recorded as seen.
    pub fn seen(&self) -> i64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks on a first connection subscribed at `cursor`.
    fn connected(last_seen: i64, cursor: i64) -> Marks {
        let mut marks = Marks::new(last_seen);
        marks.resume(Some(last_seen), cursor);
        marks
    }

    #[test]
    fn what_was_passed_on_is_dropped_after_a_resume() {
        let mut marks = connected(0, 0);
        assert!(marks.receive(5));
        assert!(marks.receive(7));
        marks.show(5);
        // Lost before any acknowledgement: the next connection starts at the old cursor
        // and pushes 5 and 7 again; only 8 is new.
        marks.resume(None, 0);
        assert!(!marks.receive(5));
        assert!(!marks.receive(7));
        assert!(marks.receive(8));
        // The dropped ones count as shown, so they are acknowledged with the rest.
        assert_eq!(marks.to_ack(), Some(7));
    }

    #[test]
    fn a_mark_recorded_by_another_process_is_honoured_on_the_next_connection() {
        let mut marks = connected(3, 3);
        assert!(marks.receive(10));
        // The TUI on this device showed up to 40 meanwhile; this connection knew nothing
        // of it, the next one reads it from the file.
        marks.resume(Some(40), 10);
        assert!(!marks.receive(25));
        assert!(marks.receive(41));
        assert_eq!(marks.seen(), 41);
        // A lower (or missing) record never lowers the mark.
        marks.resume(Some(1), 10);
        assert!(!marks.receive(41));
        marks.resume(None, 10);
        assert!(!marks.receive(41));
    }

    #[test]
    fn nothing_is_acknowledged_above_what_this_connection_was_pushed() {
        let mut marks = connected(0, 10);
        // Shown far ahead (an earlier connection, or a front end's own count).
        marks.show(100);
        assert_eq!(marks.to_ack(), None, "the cursor already covers 10");
        assert!(marks.receive(12));
        assert_eq!(marks.to_ack(), Some(12), "no further than what was pushed");
        marks.acked(12);
        assert_eq!(marks.to_ack(), None);
        // A new connection can vouch only for its own cursor until more is pushed.
        marks.resume(None, 12);
        assert_eq!(marks.to_ack(), None);
        assert!(marks.receive(20));
        assert_eq!(marks.to_ack(), Some(20));
    }

    #[test]
    fn nothing_is_acknowledged_before_it_is_shown() {
        let mut marks = connected(0, 0);
        assert!(marks.receive(1));
        assert!(marks.receive(2));
        assert_eq!(marks.to_ack(), None, "pushed is not shown");
        marks.show(1);
        assert_eq!(marks.to_ack(), Some(1));
    }

    #[test]
    fn a_reconnect_resumes_from_the_cursor() {
        let mut marks = connected(0, 0);
        assert!(marks.receive(4));
        marks.show(4);
        assert_eq!(marks.to_ack(), Some(4));
        marks.acked(4);
        // The server resumes after the cursor: nothing to acknowledge until a push.
        marks.resume(Some(4), 4);
        assert_eq!(marks.to_ack(), None);
        assert!(marks.receive(5));
        marks.show(5);
        assert_eq!(marks.to_ack(), Some(5));
        // A cursor reported higher than asked (another connection of this device) is kept.
        marks.acked(9);
        assert_eq!(marks.to_ack(), None);
    }

    #[test]
    fn a_failed_record_is_not_retried_until_more_is_shown() {
        let mut marks = connected(0, 0);
        assert!(marks.receive(3));
        marks.show(3);
        assert_eq!(marks.to_ack(), Some(3));
        marks.record_failed(3);
        assert_eq!(
            marks.to_ack(),
            None,
            "no acknowledgement without its record"
        );
        assert!(marks.receive(4));
        marks.show(4);
        assert_eq!(marks.to_ack(), Some(4));
        // A new connection tries again.
        marks.record_failed(4);
        marks.resume(None, 0);
        assert!(!marks.receive(4));
        assert_eq!(marks.to_ack(), Some(4));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let first = backoff(1);
        assert!(first >= BACKOFF_FIRST && first <= BACKOFF_FIRST.mul_f64(1.25));
        let fourth = backoff(4);
        assert!(fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(5));
        let late = backoff(40);
        assert!(late >= BACKOFF_MAX && late <= BACKOFF_MAX.mul_f64(1.25));
    }

    #[test]
    fn only_a_lost_session_or_key_is_final() {
        assert!(is_final(&ClientError::Closed(Some((
            ErrorCode::SessionRevoked,
            "revoked".into()
        )))));
        assert!(!is_final(&ClientError::Closed(None)));
        assert!(!is_final(&ClientError::Timeout("x")));
        assert!(!is_final(&ClientError::Closed(Some((
            ErrorCode::ShuttingDown,
            "bye".into()
        )))));
    }
}
