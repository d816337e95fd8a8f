-- Delivery cursors of log streams: the highest audit sequence number each stream has
-- delivered (or skipped through its filter), and the highest checkpoint it has delivered.
-- A row exists once a stream has delivered something; a stream without one starts from the
-- oldest stored event.
CREATE TABLE log_stream_cursors (
    name TEXT PRIMARY KEY,
    delivered_seq INTEGER NOT NULL,
    checkpoint_seq INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL
) STRICT;
