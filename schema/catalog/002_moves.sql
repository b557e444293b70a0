-- Catalog database, version 2: the journal of vbucket moves (calendar-rebalance).
-- Every phase change of a move is committed here before the next phase
-- starts, so `calendar-rebalance resume` can finish a move the tool did not.

CREATE TABLE IF NOT EXISTS moves (
  move_id      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  vbucket      INT UNSIGNED    NOT NULL,
  source_shard INT UNSIGNED    NOT NULL,
  target_shard INT UNSIGNED    NOT NULL,
  old_epoch    BIGINT UNSIGNED NOT NULL,
  -- copy | cutover | cleanup | done, or abandoned (calendar-rebalance abandon, before a cutover)
  phase        VARCHAR(16)     NOT NULL,
  rows_copied  BIGINT UNSIGNED NOT NULL DEFAULT 0,
  freeze_ms    DOUBLE          NULL,
  started_at   TIMESTAMP(6)    NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at   TIMESTAMP(6)    NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  KEY moves_open (phase, vbucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
