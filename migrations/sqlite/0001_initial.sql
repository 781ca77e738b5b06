-- chatd schema, version 1. Append-only: never edit a migration that has been released;
-- add a new file instead.

-- Accounts. Names are stored normalised (lower case); `deleted` accounts keep their row so
-- that history still names its sender, and the name stays reserved.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    password_hash TEXT,
    disabled      INTEGER NOT NULL DEFAULT 0,
    deleted       INTEGER NOT NULL DEFAULT 0,
    -- Highest message id any device of this user has acknowledged: a new device starts here.
    acked_upto    INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

-- One row per login ("device"). Only the SHA-256 of the session token is stored.
CREATE TABLE devices (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    token_hash   BLOB    NOT NULL UNIQUE,
    name         TEXT    NOT NULL,
    -- Highest message id this device has acknowledged; delivery resumes after it.
    cursor       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX devices_user ON devices(user_id);

-- Rooms arrive in a later migration; the table exists now so that messages can reference
-- a room without rewriting the messages table.
CREATE TABLE rooms (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- Every message, direct or (later) to a room. This table is also the offline queue:
-- delivery is "messages for this user with id above the device's cursor".
CREATE TABLE messages (
    -- Assigned by the single writer task: strictly increasing in commit order.
    id               INTEGER PRIMARY KEY,
    sender_id        INTEGER NOT NULL REFERENCES users(id),
    -- The device that sent it (not a foreign key: devices are deleted on logout).
    sender_device_id INTEGER,
    recipient_id     INTEGER REFERENCES users(id),
    room_id          INTEGER REFERENCES rooms(id),
    body             TEXT    NOT NULL,
    -- Microseconds since the Unix epoch, UTC, server clock.
    sent_at          INTEGER NOT NULL,
    -- Client-chosen idempotency key, unique per sender.
    client_key       TEXT    NOT NULL,
    CHECK ((recipient_id IS NULL) <> (room_id IS NULL))
);
CREATE UNIQUE INDEX messages_key ON messages(client_key, sender_id);
CREATE INDEX messages_recipient ON messages(recipient_id);
CREATE INDEX messages_sender ON messages(sender_id);

-- Small counters shared between the server and the admin commands.
-- `auth_epoch` is bumped by every change that can end sessions (revoke, disable, delete,
-- password change); a running server polls it and re-checks its live connections.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('auth_epoch', 0);
