-- The full-text index moves out of the commit path: a separate, derived database next to
-- this one (`<name>.search.db`), filled in batches by an indexer thread after messages are
-- committed. Inserting into FTS5 inside every group commit cost the writer about a fifth of
-- the pages it wrote and most of its CPU for text messages. The new index is built from
-- scratch on first start (see src/store/search.rs).
DROP TRIGGER messages_fts_insert;
DROP TRIGGER messages_fts_delete;
DROP TABLE messages_fts;
