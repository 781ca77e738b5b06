//! Reading messages: delivery backlog, history pages, full-text search, read markers and
//! unread counts. Every query here applies the reader's permissions: direct messages the user
//! sent or received, and room messages inside the user's membership spans.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{SqliteStore, StoreError};
use crate::ids::{DeviceId, MessageId, RoomId, UserId};
use crate::protocol::{format_timestamp, Message, MessageKind, SearchHit, UnreadInfo};

/// Columns every message query selects, in the order [`message_from_row`] reads them.
const COLUMNS: &str = "m.id, su.name, COALESCE(ru.name, '#' || r.name), m.body, m.sent_at, \
                       m.kind, mu.name, m.action";

/// Joins that resolve names for [`COLUMNS`]; `m` is the messages table.
const JOINS: &str = "JOIN users su ON su.id = m.sender_id \
                     LEFT JOIN users ru ON ru.id = m.recipient_id \
                     LEFT JOIN rooms r ON r.id = m.room_id \
                     LEFT JOIN users mu ON mu.id = m.member_id";

/// "User ?1 may read message m": a direct message they sent or received, or a room message
/// inside one of their membership spans of a room that is not deleted.
const READABLE: &str = "(m.recipient_id = ?1 OR (m.sender_id = ?1 AND m.recipient_id IS NOT NULL) \
     OR EXISTS (SELECT 1 FROM room_spans s JOIN rooms sr ON sr.id = s.room_id AND sr.deleted = 0 \
                WHERE s.room_id = m.room_id AND s.user_id = ?1 AND m.id >= s.joined_id \
                AND (s.left_id IS NULL OR m.id <= s.left_id)))";

/// Which conversation a history page or search is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryScope {
    /// Direct messages between the reader and this user.
    Direct { peer_id: UserId },
    /// A room, within the reader's membership spans.
    Room { room_id: RoomId },
}

impl HistoryScope {
    /// SQL restricting `m` to this conversation; binds `?5`.
    fn filter(self) -> &'static str {
        match self {
            HistoryScope::Direct { .. } => {
                "((m.sender_id = ?1 AND m.recipient_id = ?5) OR (m.sender_id = ?5 AND m.recipient_id = ?1))"
            }
            HistoryScope::Room { .. } => "m.room_id = ?5",
        }
    }

    fn id(self) -> i64 {
        match self {
            HistoryScope::Direct { peer_id } => peer_id.get(),
            HistoryScope::Room { room_id } => room_id.get(),
        }
    }
}

impl SqliteStore {
    /// Messages for a user's device with ids above `after`, oldest first, at most `limit`:
    /// direct messages to or from the user and room messages within the user's membership
    /// spans — except what this very device sent (it knows those already; live delivery
    /// skips them the same way).
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
               SELECT id FROM (SELECT id FROM messages WHERE recipient_id = ?1 AND id > ?3 \
                  AND sender_device_id IS NOT ?2 ORDER BY id LIMIT ?4) \
               UNION ALL SELECT id FROM (SELECT id FROM messages WHERE sender_id = ?1 \
                  AND recipient_id IS NOT NULL AND recipient_id <> ?1 AND id > ?3 \
                  AND sender_device_id IS NOT ?2 ORDER BY id LIMIT ?4) \
               UNION ALL SELECT id FROM (SELECT m.id FROM room_spans s \
                  JOIN rooms sr ON sr.id = s.room_id AND sr.deleted = 0 \
                  JOIN messages m ON m.room_id = s.room_id AND m.id >= s.joined_id \
                       AND (s.left_id IS NULL OR m.id <= s.left_id) \
                  WHERE s.user_id = ?1 AND m.id > ?3 AND m.sender_device_id IS NOT ?2 \
                  ORDER BY m.id LIMIT ?4)) \
             SELECT {COLUMNS} FROM ids JOIN messages m ON m.id = ids.id {JOINS} \
             ORDER BY m.id LIMIT ?4"
        );
        let rows = sqlx::query(&sql)
            .bind(user_id.get())
            .bind(device_id.get())
            .bind(after.get())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(message_from_row).collect())
    }

    /// One page of a conversation, oldest first, as `reader` may see it. With `after`: the
    /// oldest `limit` messages above it, and whether newer ones exist. Otherwise: the newest
    /// `limit` messages below `before` (or overall), and whether older ones exist.
    pub async fn history(
        &self,
        reader: UserId,
        scope: HistoryScope,
        before: Option<MessageId>,
        after: Option<MessageId>,
        limit: u32,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let (bound, order) = match after {
            Some(_) => ("m.id > ?2 AND m.id < ?3", "ASC"),
            None => ("m.id < ?3 AND m.id > ?2", "DESC"),
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM messages m {JOINS} \
             WHERE {bound} AND {filter} AND {READABLE} ORDER BY m.id {order} LIMIT ?4",
            filter = scope.filter()
        );
        let rows = sqlx::query(&sql)
            .bind(reader.get())
            .bind(after.map_or(0, MessageId::get))
            .bind(before.map_or(i64::MAX, MessageId::get))
            .bind(i64::from(limit) + 1)
            .bind(scope.id())
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

    /// Full-text search over text messages `reader` may read, best match first. `terms` are
    /// plain words (all must match); they are quoted before reaching FTS5, so no query syntax
    /// from users is interpreted.
    pub async fn search(
        &self,
        reader: UserId,
        terms: &[String],
        scope: Option<HistoryScope>,
        limit: u32,
    ) -> Result<Vec<SearchHit>, StoreError> {
        let query = terms
            .iter()
            .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ");
        let filter = scope.map_or("1", |s| s.filter());
        // The index is a contentless FTS5 table in the attached search database; the
        // messages, names and permissions come from the main one.
        let sql = format!(
            "SELECT {COLUMNS} FROM search.fts JOIN messages m ON m.id = fts.rowid {JOINS} \
             WHERE fts MATCH ?2 AND {filter} AND {READABLE} \
             ORDER BY bm25(fts), m.id DESC LIMIT ?4"
        );
        self.search.wait_fresh().await;
        let rows = sqlx::query(&sql)
            .bind(reader.get())
            .bind(query)
            .bind(0i64)
            .bind(limit)
            .bind(scope.map_or(0, |s| s.id()))
            .fetch_all(&self.search.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let message = message_from_row(r);
                let snippet = super::search::snippet(&message.body, terms);
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

    /// Moves a read marker forward (never back); returns where it is now.
    pub async fn set_read_marker(
        &self,
        user_id: UserId,
        conversation: &str,
        upto: MessageId,
    ) -> Result<MessageId, StoreError> {
        let row = sqlx::query(
            "INSERT INTO read_markers (user_id, conversation, upto) VALUES (?, ?, ?) \
             ON CONFLICT (user_id, conversation) DO UPDATE SET upto = MAX(upto, excluded.upto) \
             RETURNING upto",
        )
        .bind(user_id.get())
        .bind(conversation)
        .bind(upto.get())
        .fetch_one(&self.pool)
        .await?;
        Ok(MessageId(row.get(0)))
    }

    /// Per conversation of `user_id` (direct peers and current rooms): messages from others
    /// above the read marker, and the last message. Most recent conversation first.
    pub async fn unread(&self, user_id: UserId) -> Result<Vec<UnreadInfo>, StoreError> {
        let mut scopes: Vec<(String, HistoryScope)> = Vec::new();
        let peers = sqlx::query(
            "SELECT u.id, u.name FROM (SELECT DISTINCT CASE WHEN sender_id = ?1 THEN recipient_id \
             ELSE sender_id END AS peer FROM messages \
             WHERE recipient_id = ?1 OR (sender_id = ?1 AND recipient_id IS NOT NULL)) p \
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
             WHERE s.user_id = ? AND s.left_id IS NULL AND r.deleted = 0",
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
                   COALESCE((SELECT upto FROM read_markers WHERE user_id = ?1 AND conversation = ?2), 0) \
                 AND m.sender_id <> ?1 AND m.kind = 'text' AND {filter} AND {READABLE}",
                filter = scope.filter()
            );
            let unread: i64 = sqlx::query(&sql)
                .bind(user_id.get())
                .bind(&conversation)
                .bind(0i64)
                .bind(0i64)
                .bind(scope.id())
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

/// Reads the [`COLUMNS`] of a message row.
pub(super) fn message_from_row(r: &SqliteRow) -> Message {
    let kind: String = r.get(5);
    Message {
        id: r.get(0),
        from: r.get(1),
        to: r.get(2),
        body: r.get(3),
        sent_at: format_timestamp(r.get(4)),
        kind: MessageKind::from_stored(&kind),
        member: r.get(6),
        action: r.get::<i64, _>(7) != 0,
    }
}
