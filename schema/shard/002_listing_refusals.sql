-- Shard database, version 2: how many refusals each listing keeps.
-- A kept refusal (a reservations row with status 'refused', written by
-- calendard in the same transaction) changes no calendar version; a vbucket
-- move compares this counter beside listings.version to find the listings
-- whose rows changed, at the cost of one row per listing. Not relayed.
CREATE TABLE IF NOT EXISTS listing_refusals (
  listing_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  vbucket    INT UNSIGNED    NOT NULL,
  version    BIGINT UNSIGNED NOT NULL,  -- refusals kept for the listing: only grows
  KEY listing_refusals_vbucket (vbucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
