-- Roots of the provenance log's perfect Merkle subtrees at every 8th level (256,
-- 65,536, … leaves), written by the checkpointer as it follows the log, so that an
-- inclusion or consistency proof reads O(log n) rows instead of every leaf.
CREATE TABLE provenance_subtrees (
  level SMALLINT NOT NULL,
  idx BIGINT NOT NULL,
  hash TEXT NOT NULL,
  PRIMARY KEY (level, idx)
);
