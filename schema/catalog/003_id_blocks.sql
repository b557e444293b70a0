-- Catalog database, version 3: blocks of reservation ids. Each calendard
-- takes a block with one UPDATE (next_id moves on by the block's size) and
-- hands its ids out from memory, so no id is ever made twice, by any daemon
-- for any shard: a vbucket move brings one shard's reservations onto another,
-- where reservation_id is the primary key. The application user needs
-- UPDATE on this table (docs/operations.md).
--
-- The first id is above every id calendard made before this table: ms since
-- 2020-01-01 shifted left by 15 (until 2026-11-30) or 12 bits, both below
-- 7.24e15 until 2026-12-31 (calendar-admin migrate moves next_id past the
-- highest id on the shards, for a release running later). Ids stay below
-- 2^53 (exact in any JSON client): 1.75e15 ids are left.

CREATE TABLE IF NOT EXISTS id_blocks (
  name     VARCHAR(32)     NOT NULL PRIMARY KEY,
  next_id  BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

INSERT IGNORE INTO id_blocks (name, next_id) VALUES ('reservation', 7250000000000000);
