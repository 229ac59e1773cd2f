-- Provenance payloads are kept as the text they were hashed over. `json` stores the
-- canonical JSON as sent (validated); `jsonb` parsed every payload into a tree on
-- insert, 12% of PostgreSQL's CPU under `mesh bench queue`, for operators that no
-- query of the log uses. Existing rows are rewritten once, in jsonb's text form;
-- verification re-canonicalises every payload, so their hashes still check.
ALTER TABLE provenance_events ALTER COLUMN payload TYPE JSON USING payload::text::json;
