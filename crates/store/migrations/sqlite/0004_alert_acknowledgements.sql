-- Acknowledgements of fired alerts. An alert is an audit event of kind `alert`; the row names
-- it by event id and records who acknowledged it and when. It has no foreign key to the event,
-- because the retention purge may delete the event and the acknowledgement is kept for the
-- record.
CREATE TABLE alert_acknowledgements (
    alert_id TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    acknowledged_at_us INTEGER NOT NULL
) STRICT;
