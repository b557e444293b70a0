-- Shard database, version 1: one listing's whole calendar lives on one shard.
-- Contract (read by outside audit tools, never rename):
--   reservations(reservation_id, listing_id, check_in, check_out, status)
--   nights(listing_id, night, status, reservation_id, price)
-- Status columns are VARCHAR, not ENUM, so binlog row images decode cleanly.
-- A live reservation is status = 'confirmed'; 'cancelled' and 'refused' rows
-- hold no nights (a refused one's stay overlapped nights booked or blocked
-- when it was refused).

CREATE TABLE IF NOT EXISTS listings (
  listing_id    BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  vbucket       INT UNSIGNED    NOT NULL,
  version       BIGINT UNSIGNED NOT NULL DEFAULT 1,  -- calendar version: bumped by every change
  rules_version BIGINT UNSIGNED NOT NULL DEFAULT 1,  -- bumped when settings change
  default_price BIGINT          NOT NULL,            -- minor units
  currency      VARCHAR(3)      NOT NULL,
  min_nights    INT             NOT NULL,
  max_nights    INT             NOT NULL,
  updated_at    TIMESTAMP(6)    NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  KEY listings_vbucket (vbucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Sparse: a night with no row is available at the listing's default price.
-- Host writes (block, unblock, set_price) make a row for each night of their
-- range, an unblock an available one: the upsert is what locks every night.
-- Rows are never deleted by the calendar (only by a vbucket move), so a
-- night's version only grows.
CREATE TABLE IF NOT EXISTS nights (
  listing_id     BIGINT UNSIGNED NOT NULL,
  night          DATE            NOT NULL,
  status         VARCHAR(16)     NOT NULL,  -- available | blocked | booked
  reservation_id BIGINT UNSIGNED NULL,      -- set iff status = 'booked'
  price          BIGINT          NULL,      -- nightly price override, minor units; NULL = default
  version        BIGINT UNSIGNED NOT NULL DEFAULT 1,
  vbucket        INT UNSIGNED    NOT NULL,
  PRIMARY KEY (listing_id, night),
  KEY nights_reservation (reservation_id),
  KEY nights_vbucket (vbucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS reservations (
  reservation_id  BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  listing_id      BIGINT UNSIGNED NOT NULL,
  vbucket         INT UNSIGNED    NOT NULL,
  check_in        DATE            NOT NULL,
  check_out       DATE            NOT NULL,  -- exclusive
  guest_id        BIGINT UNSIGNED NOT NULL,
  status          VARCHAR(16)     NOT NULL,  -- confirmed | cancelled | refused (no nights: a
                                             -- 409 kept under its idempotency key for replays)
  total_price     BIGINT          NOT NULL,
  currency        VARCHAR(3)      NOT NULL,
  idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  request_hash    VARCHAR(16)     NOT NULL,  -- hex FNV-1a 64 of the canonical request
  version         BIGINT UNSIGNED NOT NULL,  -- listing version this booking committed
  created_at      TIMESTAMP(6)    NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at      TIMESTAMP(6)    NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  UNIQUE KEY reservations_idempotency (listing_id, idempotency_key),
  KEY reservations_listing (listing_id, check_in),
  KEY reservations_vbucket (vbucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The fence: the vbuckets this shard owns now. Every write transaction reads
-- its vbucket's row in share mode; a move takes it exclusively.
CREATE TABLE IF NOT EXISTS vbucket_owner (
  vbucket INT UNSIGNED    NOT NULL PRIMARY KEY,
  epoch   BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
