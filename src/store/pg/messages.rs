//! Reading messages on PostgreSQL: delivery backlog, history pages, full-text search, read
//! markers and unread counts, with the same permission rule as SQLite's (`store/messages.rs`):
//! direct messages the reader sent or received, room messages inside the reader's membership
//! spans of a live room.

use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{flag, PostgresStore};
use crate::ids::{DeviceId, MessageId, RoomId, UserId};
use crate::protocol::{format_timestamp, Message, MessageKind, SearchHit, UnreadInfo};
use crate::store::{HistoryScope, StoreError};

/// The columns [`message_from_row`] reads, over `messages m` with [`JOINS`].
///
/// A deleted room's name carries `~deleted~ID` (room names never hold `~`): its `delete`
/// event, read back by the tail after the deletion, names the room as it was.
pub(super) const COLUMNS: &str = "m.id, su.name, \
     COALESCE(ru.name, '#' || split_part(r.name, '~deleted~', 1)), m.body, \
     m.sent_at, m.kind, mu.name, m.action";

pub(super) const JOINS: &str = "JOIN users su ON su.id = m.sender_id \
                                LEFT JOIN users ru ON ru.id = m.recipient_id \
                                LEFT JOIN rooms r ON r.id = m.room_id \
                                LEFT JOIN users mu ON mu.id = m.member_id";

/// Whether the user `$1` may read message `m`.
const READABLE: &str = "(m.recipient_id = $1 OR (m.sender_id = $1 AND m.recipient_id IS NOT NULL) \
     OR EXISTS (SELECT 1 FROM room_spans s JOIN rooms sr ON sr.id = s.room_id AND NOT sr.deleted \
                WHERE s.room_id = m.room_id AND s.user_id = $1 AND m.id >= s.joined_id \
                AND (s.left_id IS NULL OR m.id <= s.left_id)))";

/// The conversation `scope` as a condition on `m`, its peer or room being parameter `$n`
/// (and the reader `$1`).
fn scope_filter(scope: HistoryScope, n: usize) -> String {
    match scope {
        HistoryScope::Direct { .. } => format!(
            "((m.sender_id = $1 AND m.recipient_id = ${n}) \
              OR (m.sender_id = ${n} AND m.recipient_id = $1))"
        ),
        HistoryScope::Room { .. } => format!("m.room_id = ${n}"),
    }
}

fn scope_id(scope: HistoryScope) -> i64 {
    match scope {
        HistoryScope::Direct { peer_id } => peer_id.get(),
        HistoryScope::Room { room_id } => room_id.get(),
    }
}

impl PostgresStore {
    /// Messages for a user's device with ids above `after`, oldest first, at most `limit`,
    /// except what this very device sent.
    pub async fn backlog(
        &self,
        user_id: UserId,
        device_id: DeviceId,
        after: MessageId,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        // Three indexed branches, each already limited, merged by id.
        let sql = format!(
            "WITH ids(id) AS ( \
               (SELECT id FROM messages WHERE recipient_id = $1 AND id > $3 \
                  AND sender_device_id IS DISTINCT FROM $2 ORDER BY id LIMIT $4) \
               UNION ALL (SELECT id FROM messages WHERE sender_id = $1 \
                  AND recipient_id IS NOT NULL AND recipient_id <> $1 AND id > $3 \
                  AND sender_device_id IS DISTINCT FROM $2 ORDER BY id LIMIT $4) \
               UNION ALL (SELECT m.id FROM room_spans s \
                  JOIN rooms sr ON sr.id = s.room_id AND NOT sr.deleted \
                  JOIN messages m ON m.room_id = s.room_id AND m.id >= s.joined_id \
                       AND (s.left_id IS NULL OR m.id <= s.left_id) \
                  WHERE s.user_id = $1 AND m.id > $3 \
                  AND m.sender_device_id IS DISTINCT FROM $2 ORDER BY m.id LIMIT $4)) \
             SELECT {COLUMNS} FROM ids JOIN messages m ON m.id = ids.id {JOINS} \
             ORDER BY m.id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id.get())
            .bind(device_id.get())
            .bind(after.get())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(message_from_row).collect())
    }

    /// One page of a conversation, oldest first, as `reader` may see it: above `after`, or
    /// below `before` (or the newest); the flag says whether more lies beyond the page.
    pub async fn history(
        &self,
        reader: UserId,
        scope: HistoryScope,
        before: Option<MessageId>,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let order = if after.is_some() { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT {COLUMNS} FROM messages m {JOINS} \
             WHERE m.id > $2 AND m.id < $3 AND {filter} AND {READABLE} \
             ORDER BY m.id {order} LIMIT $4",
            filter = scope_filter(scope, 5)
        );
        let rows = sqlx::query(&sql)
            .bind(reader.get())
            .bind(after.map_or(0, MessageId::get))
            .bind(before.map_or(i64::MAX, MessageId::get))
            .bind(i64::from(limit) + 1)
            .bind(scope_id(scope))
            .fetch_all(&self.pool)
            .await?;
        let more = rows.len() > limit as usize;
        let mut page: Vec<Message> = rows
            .iter()
            .take(limit as usize)
            .map(message_from_row)
            .collect();
        if after.is_none() {
            page.reverse();
        }
        Ok((page, more))
    }

    /// Full-text search over text messages `reader` may read, best match first. Every term
    /// must match, each as a phrase of its words (`phraseto_tsquery`): a term is never
    /// parsed as query syntax.
    pub async fn search(
        &self,
        reader: UserId,
        terms: &[String],
        scope: Option<HistoryScope>,
        limit: u32,
    ) -> Result<Vec<SearchHit>, StoreError> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        // $1 reader, $2 limit, $3 scope (when given), then one parameter per term.
        let first_term = if scope.is_some() { 4 } else { 3 };
        let query = (0..terms.len())
            .map(|i| format!("phraseto_tsquery('simple', ${})", first_term + i))
            .collect::<Vec<_>>()
            .join(" && ");
        let filter = scope.map_or_else(|| "true".to_string(), |s| scope_filter(s, 3));
        // The indexed messages through the GIN index of `message_search`; those above the
        // indexer's mark from `messages` itself. One statement, one snapshot: the indexer
        // writes rows and moves the mark in one transaction, so each message is read once.
        let sql = format!(
            "WITH fts AS (SELECT {query} AS q), \
             hits AS (\
               SELECT s.id, ts_rank(s.doc, fts.q) AS rank FROM message_search s, fts \
               WHERE s.doc @@ fts.q \
               UNION ALL \
               SELECT t.id, ts_rank(to_tsvector('simple', t.body), fts.q) \
               FROM search_state st, fts, messages t \
               WHERE t.id > st.indexed_upto AND t.kind = 'text' \
               AND to_tsvector('simple', t.body) @@ fts.q) \
             SELECT {COLUMNS} FROM hits JOIN messages m ON m.id = hits.id {JOINS} \
             WHERE {filter} AND {READABLE} \
             ORDER BY hits.rank DESC, m.id DESC LIMIT $2"
        );
        let mut q = sqlx::query(&sql).bind(reader.get()).bind(i64::from(limit));
        if let Some(scope) = scope {
            q = q.bind(scope_id(scope));
        }
        for term in terms {
            q = q.bind(term.as_str());
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let message = message_from_row(r);
                let snippet = crate::store::search::snippet(&message.body, terms);
                SearchHit { message, snippet }
            })
            .collect())
    }

    /// The newest message of a conversation `reader` can see, if any.
    pub async fn latest_id(
        &self,
        reader: UserId,
        scope: HistoryScope,
    ) -> Result<Option<MessageId>, StoreError> {
        let (page, _) = self.history(reader, scope, None, None, 1).await?;
        Ok(page.last().map(|m| MessageId(m.id)))
    }

    /// Moves a read marker forward (never back); returns where it is now. Moves commute, so
    /// nodes never need to agree on an order.
    pub async fn set_read_marker(
        &self,
        user_id: UserId,
        conversation: &str,
        upto: MessageId,
    ) -> Result<MessageId, StoreError> {
        // The other nodes hear of it (module `tail`), to tell the user's connections there.
        let row = sqlx::query(
            "WITH m AS (INSERT INTO read_markers (user_id, conversation, upto) \
               VALUES ($1, $2, $3) ON CONFLICT (user_id, conversation) \
               DO UPDATE SET upto = GREATEST(read_markers.upto, excluded.upto) RETURNING upto) \
             SELECT upto, pg_notify($4, $5 || ':' || $1 || ':' || upto || ':' || $2) FROM m",
        )
        .bind(user_id.get())
        .bind(conversation)
        .bind(upto.get())
        .bind(super::tail::READ_CHANNEL)
        .bind(self.token.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(MessageId(row.get(0)))
    }

    /// Per conversation of `user_id`: messages from others above the read marker, and the
    /// last message. Most recent conversation first.
    pub async fn unread(&self, user_id: UserId) -> Result<Vec<UnreadInfo>, StoreError> {
        let mut scopes: Vec<(String, HistoryScope)> = Vec::new();
        let peers = sqlx::query(
            "SELECT u.id, u.name FROM (SELECT DISTINCT CASE WHEN sender_id = $1 THEN recipient_id \
             ELSE sender_id END AS peer FROM messages \
             WHERE recipient_id = $1 OR (sender_id = $1 AND recipient_id IS NOT NULL)) p \
             JOIN users u ON u.id = p.peer",
        )
        .bind(user_id.get())
        .fetch_all(&self.pool)
        .await?;
        for r in peers {
            let peer_id = UserId(r.get(0));
            scopes.push((r.get(1), HistoryScope::Direct { peer_id }));
        }
        let rooms = sqlx::query(
            "SELECT r.id, r.name FROM room_spans s JOIN rooms r ON r.id = s.room_id \
             WHERE s.user_id = $1 AND s.left_id IS NULL AND NOT r.deleted",
        )
        .bind(user_id.get())
        .fetch_all(&self.pool)
        .await?;
        for r in rooms {
            let name: String = r.get(1);
            let room_id = RoomId(r.get(0));
            scopes.push((format!("#{name}"), HistoryScope::Room { room_id }));
        }
        let mut out = Vec::with_capacity(scopes.len());
        for (conversation, scope) in scopes {
            let sql = format!(
                "SELECT COUNT(*) FROM messages m WHERE m.id > \
                   COALESCE((SELECT upto FROM read_markers \
                             WHERE user_id = $1 AND conversation = $2), 0) \
                 AND m.sender_id <> $1 AND m.kind = 'text' AND {filter} AND {READABLE}",
                filter = scope_filter(scope, 3)
            );
            let unread: i64 = sqlx::query(&sql)
                .bind(user_id.get())
                .bind(&conversation)
                .bind(scope_id(scope))
                .fetch_one(&self.pool)
                .await?
                .get(0);
            let (last, _) = self.history(user_id, scope, None, None, 1).await?;
            out.push(UnreadInfo {
                conversation,
                unread: u64::try_from(unread).unwrap_or(0),
                last: last.into_iter().next(),
            });
        }
        out.sort_by_key(|u| std::cmp::Reverse(u.last.as_ref().map_or(0, |m| m.id)));
        Ok(out)
    }
}

/// A message from a row of [`COLUMNS`].
pub(super) fn message_from_row(r: &PgRow) -> Message {
    let kind: String = r.get(5);
    Message {
        id: r.get(0),
        from: r.get(1),
        to: r.get(2),
        body: super::body::decode(r.get(3)),
        sent_at: format_timestamp(r.get(4)),
        kind: MessageKind::from_stored(&kind),
        member: r.get(6),
        action: flag(r, 7),
    }
}
