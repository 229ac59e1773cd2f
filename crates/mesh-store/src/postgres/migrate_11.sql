-- Signed checkpoints of the provenance Merkle tree. The leaves are derived from the
-- events' hashes, so nothing is added to the append path; one row per tree size (the
-- root is a function of the events, so two signers can only agree or expose a rewrite).
CREATE TABLE provenance_checkpoints (
  tree_size BIGINT PRIMARY KEY,
  root_hash TEXT NOT NULL,
  note TEXT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
