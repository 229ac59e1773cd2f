-- Decision logs and other per-kind views read the log by action.
CREATE INDEX provenance_events_action ON provenance_events(action, seq);
