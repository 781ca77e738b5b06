-- Actions (emotes, IRC's `/me`): a text message shown as `* alice waves`. The body is the
-- text without the CTCP wrapping; 1 marks an action. Only text messages are actions.
ALTER TABLE messages ADD COLUMN action INTEGER NOT NULL DEFAULT 0;
