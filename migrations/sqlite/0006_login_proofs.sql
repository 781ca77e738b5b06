-- Login proofs (OWASP device cookies; see src/auth/proof.rs). The server's HMAC key lives
-- here, beside the accounts and the proof failures it refers to, so that a restored or
-- moved database keeps all three consistent and a fresh database gets a fresh key.
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
-- Failed password checks made with a proof, by the proof's nonce. At the failure budget the
-- proof is void. A row is dropped once its proof has expired (it is refused then anyway).
CREATE TABLE login_proof_failures (
    nonce      BLOB PRIMARY KEY,
    failures   INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX login_proof_failures_expiry ON login_proof_failures(expires_at);
