-- SPIFFE X.509 CA certificates of the trust domain in every state. Rows are never deleted, so
-- operators can still look up which CA signed an old X.509-SVID; removal only clears
-- `encrypted_private_key`.
CREATE TABLE x509_authorities (
    id TEXT PRIMARY KEY,
    trust_domain TEXT NOT NULL,
    state TEXT NOT NULL,
    certificate_der BLOB NOT NULL,
    encrypted_private_key BLOB,
    created_at_us INTEGER NOT NULL,
    not_after_us INTEGER NOT NULL,
    activates_at_us INTEGER,
    retired_at_us INTEGER,
    remove_after_us INTEGER
) STRICT;
