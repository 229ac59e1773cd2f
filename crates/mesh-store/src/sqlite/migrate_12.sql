-- Where each projection of the provenance log (a live graph, say) has got to: the
-- seq of the last event it applied. Projections only read the log; this is their state.
CREATE TABLE projection_cursors (
    name TEXT PRIMARY KEY,
    after_seq INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
