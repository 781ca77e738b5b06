-- chatd schema for PostgreSQL, version 2: the full-text index moves out of the commit, and a
-- writer stores a batch of sends with one call (src/store/pg/writer.rs, search.rs).
--
-- Measured on version 1 (docs/benchmarks.md): the GIN index over `messages.body` was about
-- 70 % of what a stored message cost the writer, and a group commit took eight round trips.

-- 1. Search: a table of its own, filled after commit by an indexer (one node at a time),
--    as SQLite's index file is. Derived data: `chatd migrate` never copies it.
DROP INDEX messages_search;

CREATE TABLE message_search (
    id  BIGINT   PRIMARY KEY,
    doc tsvector NOT NULL
);
CREATE INDEX message_search_doc ON message_search USING GIN (doc);

-- Every text message with an id up to `indexed_upto` has its row in `message_search`; a
-- search reads the newer ones from `messages` itself, so it is never stale. The indexer
-- moves the mark in the transaction that writes the rows.
CREATE TABLE search_state (
    only_row     BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    indexed_upto BIGINT  NOT NULL
);
INSERT INTO search_state (only_row, indexed_upto) VALUES (true, 0);

-- What version 1 stored, indexed now, in one statement (one snapshot): ids become visible in
-- id order, so every message at or below the mark is in this snapshot.
WITH indexed AS (
    INSERT INTO message_search (id, doc)
    SELECT id, to_tsvector('simple', body) FROM messages WHERE kind = 'text'
)
UPDATE search_state SET indexed_upto = (SELECT COALESCE(MAX(id), 0) FROM messages);

-- 2. What else every stored message paid for (measured with pgbench, 100 sends per call of
--    the function below: 7.8 ms, 5.7 ms without the foreign keys, 3.9 ms with the partial
--    indexes as well):
--    - The foreign keys of `messages`: each row checked its sender, its recipient or room
--      with a query of its own, which also took a KEY SHARE lock on those rows (the locks
--      cursor updates by other nodes then waited on). Nothing can break them: the core
--      resolves every name to a live id before a send, and users and rooms are never
--      deleted, only marked (their rows stay).
--    - A direct message has no room and a room message no recipient: those two indexes
--      now hold only the rows that have one.
ALTER TABLE messages
    DROP CONSTRAINT messages_sender_id_fkey,
    DROP CONSTRAINT messages_recipient_id_fkey,
    DROP CONSTRAINT messages_room_id_fkey;
DROP INDEX messages_recipient;
CREATE INDEX messages_recipient ON messages(recipient_id, id) WHERE recipient_id IS NOT NULL;
DROP INDEX messages_room;
CREATE INDEX messages_room ON messages(room_id, id) WHERE room_id IS NOT NULL;

-- 3. Acks: raise device cursors and users' acknowledged marks (never lower them). Rows are
--    locked in id order first, so two nodes moving the same rows wait for each other, never
--    deadlock. NO KEY UPDATE, not UPDATE: it is all an update of these columns needs, and
--    it leaves KEY SHARE free (the foreign keys of `devices` and `read_markers` take it).
CREATE FUNCTION chatd_store_acks(
    device_ids BIGINT[], device_uptos BIGINT[],
    user_ids   BIGINT[], user_uptos   BIGINT[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(device_ids) > 0 THEN
        PERFORM 1 FROM devices d WHERE d.id = ANY(device_ids) ORDER BY d.id
            FOR NO KEY UPDATE;
        UPDATE devices d SET cursor = GREATEST(d.cursor, v.upto)
            FROM UNNEST(device_ids, device_uptos) AS v(k, upto) WHERE d.id = v.k;
    END IF;
    IF cardinality(user_ids) > 0 THEN
        PERFORM 1 FROM users u WHERE u.id = ANY(user_ids) ORDER BY u.id
            FOR NO KEY UPDATE;
        UPDATE users u SET acked_upto = GREATEST(u.acked_upto, v.upto)
            FROM UNNEST(user_ids, user_uptos) AS v(k, upto) WHERE u.id = v.k;
    END IF;
END $$;

-- 4. Sends: one call stores a writer's batch (each (sender, key) once) in the caller's
--    transaction, or its own. It takes the counter row first and holds it to COMMIT, so ids
--    are dense and visible in id order across nodes. Then, per send, in input order:
--    - a key the sender already used returns that message (`is_new` false), refused or not;
--    - a refused send (the caller checked it against its room map) is not stored, and
--      returns no row;
--    - any other is stored with the next id, stamped `GREATEST(now_at, last sent_at)`, and
--      moves the sender's read marker of `conversations[i]` to it.
--    Then the acks, the counter and one NOTIFY on `channel` with the new highest id.
--    When `known_version` is not the counter's membership version, the caller's room map
--    is stale: nothing is stored and the one row returned is (-1, current version, 0, false).
CREATE FUNCTION chatd_store_sends(
    known_version BIGINT, now_at BIGINT, channel TEXT,
    senders BIGINT[], devices BIGINT[], recipients BIGINT[], room_ids BIGINT[],
    bodies TEXT[], keys TEXT[], actions BOOLEAN[], conversations TEXT[], refused BOOLEAN[],
    ack_devices BIGINT[], ack_device_uptos BIGINT[], ack_users BIGINT[], ack_user_uptos BIGINT[]
) RETURNS TABLE (slot BIGINT, message_id BIGINT, stored_at BIGINT, is_new BOOLEAN)
LANGUAGE plpgsql AS $$
DECLARE
    issued  BIGINT;
    current BIGINT;
    last_at BIGINT;
    stamp   BIGINT;
    newest  BIGINT;
BEGIN
    SELECT c.last_id, c.membership_version, c.last_sent_at INTO issued, current, last_at
        FROM id_counter c FOR UPDATE;
    IF current <> known_version THEN
        RETURN QUERY SELECT -1::BIGINT, current, 0::BIGINT, false;
        RETURN;
    END IF;
    stamp := GREATEST(now_at, last_at);
    RETURN QUERY
    WITH input AS (
        SELECT * FROM UNNEST(senders, devices, recipients, room_ids, bodies, keys, actions,
                             conversations, refused)
            WITH ORDINALITY AS u(sender, device, recipient, room, body, key, action,
                                 conversation, refused, ord)
    ), found AS (
        -- One probe of messages_key per send, whatever the planner thinks of the table:
        -- LIMIT keeps the lateral subquery from becoming a join. A hash join over a seq
        -- scan of `messages` is what a plan cached on a young table chose (its statistics
        -- said 945 rows), and every call then read the whole table.
        SELECT i.ord, m.id, m.sent_at FROM input i
        CROSS JOIN LATERAL (
            SELECT m.id, m.sent_at FROM messages m
            WHERE m.client_key = i.key AND m.sender_id = i.sender
            LIMIT 1
        ) m
    ), fresh AS (
        SELECT i.*, issued + row_number() OVER (ORDER BY i.ord) AS new_id
        FROM input i
        WHERE NOT i.refused AND NOT EXISTS (SELECT 1 FROM found f WHERE f.ord = i.ord)
    ), stored AS (
        INSERT INTO messages (id, sender_id, sender_device_id, recipient_id, room_id, body,
                              sent_at, client_key, kind, action)
        SELECT n.new_id, n.sender, n.device, n.recipient, n.room, n.body, stamp, n.key,
               'text', n.action
        FROM fresh n
    ), marked AS (
        INSERT INTO read_markers (user_id, conversation, upto)
        SELECT n.sender, n.conversation, MAX(n.new_id) FROM fresh n
        GROUP BY n.sender, n.conversation
        ON CONFLICT (user_id, conversation)
        DO UPDATE SET upto = GREATEST(read_markers.upto, excluded.upto)
    )
    SELECT f.ord, f.id, f.sent_at, false FROM found f
    UNION ALL
    SELECT n.ord, n.new_id, stamp, true FROM fresh n;

    PERFORM chatd_store_acks(ack_devices, ack_device_uptos, ack_users, ack_user_uptos);
    -- Only this transaction can have stored ids above `issued`: it holds the counter.
    SELECT MAX(m.id) INTO newest FROM messages m WHERE m.id > issued;
    IF newest IS NOT NULL THEN
        UPDATE id_counter SET last_id = newest, last_sent_at = stamp;
        PERFORM pg_notify(channel, newest::TEXT);
    END IF;
END $$;
