-- Chaining on the server. An append reads and locks the log's head, hashes each event
-- after it, inserts the events and advances the head in this one statement, so no
-- round trip to the mesh falls inside the lock that every other appender waits for.
-- The mesh writes each event's canonical JSON but for the part that depends on its
-- place in the log: `head || payload || ,"prevHash":"<previous hash>","seq":<seq> ||
-- tail` is what is hashed (`mesh_types::ServerSealed`; Rust's verification rebuilds the
-- same text from the stored fields). `head` and `tail` arrive as bytes, exactly as
-- hashed; the payload and the middle are converted to UTF-8, which returns the bytes
-- the client sent.
CREATE FUNCTION mesh_append_events(
  p_ids UUID[], p_ts TIMESTAMPTZ[], p_actions TEXT[], p_actors TEXT[], p_task_ids UUID[],
  p_subject_types TEXT[], p_subject_ids TEXT[], p_payloads TEXT[], p_heads BYTEA[],
  p_tails BYTEA[],
  OUT first_prev TEXT, OUT head_count BIGINT, OUT hashes TEXT[])
LANGUAGE plpgsql AS $$
DECLARE
  n INT := cardinality(p_ids);
  last TEXT;
BEGIN
  SELECT h.count, h.last_hash INTO head_count, last FROM provenance_head h WHERE h.id = 1 FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'the provenance head row is missing';
  END IF;
  first_prev := last;
  hashes := array_fill(NULL::TEXT, ARRAY[n]);
  FOR i IN 1..n LOOP
    last := encode(sha256(p_heads[i]
      || convert_to(p_payloads[i] || ',"prevHash":"' || last || '","seq":' || (head_count + i)::TEXT, 'UTF8')
      || p_tails[i]), 'hex');
    hashes[i] := last;
  END LOOP;
  INSERT INTO provenance_events (seq, id, ts, action, actor, task_id, subject_type, subject_id, payload, prev_hash, hash)
  SELECT head_count + u.o, u.id, u.ts, u.action, u.actor, u.task_id, u.subject_type, u.subject_id, u.payload::JSON,
         CASE WHEN u.o = 1 THEN first_prev ELSE hashes[u.o - 1] END, hashes[u.o]
  FROM unnest(p_ids, p_ts, p_actions, p_actors, p_task_ids, p_subject_types, p_subject_ids, p_payloads)
       WITH ORDINALITY AS u(id, ts, action, actor, task_id, subject_type, subject_id, payload, o);
  UPDATE provenance_head SET count = head_count + n, last_hash = last WHERE id = 1;
END
$$;
