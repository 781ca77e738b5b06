-- Rooms, membership spans, membership events, read markers and full-text search.
-- Messages keep their shape: room messages use the room_id column reserved in 0001.

ALTER TABLE rooms ADD COLUMN owner_id INTEGER REFERENCES users(id);
ALTER TABLE rooms ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
-- Deleted rooms keep their rows (messages reference them) under a freed name.
ALTER TABLE rooms ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;

-- 'text' for what people write; 'create', 'join', 'invite', 'leave', 'kick' for membership
-- events, which are ordered in the room's history like any message.
ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'text';
-- For membership events: the user who joined, was invited, left or was kicked.
ALTER TABLE messages ADD COLUMN member_id INTEGER;

CREATE INDEX messages_room ON messages(room_id);

-- One row per stretch of membership: the user receives and may read the room's messages with
-- joined_id <= id <= left_id (left_id NULL while still a member). joined_id and left_id are
-- the ids of the join and leave/kick events themselves.
CREATE TABLE room_spans (
    room_id   INTEGER NOT NULL REFERENCES rooms(id),
    user_id   INTEGER NOT NULL REFERENCES users(id),
    joined_id INTEGER NOT NULL,
    left_id   INTEGER,
    PRIMARY KEY (room_id, user_id, joined_id)
);
CREATE INDEX room_spans_user ON room_spans(user_id);

-- Per user and conversation ('#room' or a peer's name): the highest message id read.
-- Markers only move forward.
CREATE TABLE read_markers (
    user_id      INTEGER NOT NULL REFERENCES users(id),
    conversation TEXT    NOT NULL,
    upto         INTEGER NOT NULL,
    PRIMARY KEY (user_id, conversation)
);

-- Full-text search over text messages: an external-content FTS5 table kept in sync by
-- triggers (messages are never updated, only inserted and, with their room, deleted).
CREATE VIRTUAL TABLE messages_fts USING fts5(body, content = 'messages', content_rowid = 'id');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.kind = 'text' BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.kind = 'text' BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;
INSERT INTO messages_fts (rowid, body) SELECT id, body FROM messages WHERE kind = 'text';
