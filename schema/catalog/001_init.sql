-- Catalog database, version 1: the shard registry and the vbucket map.
-- Applied by `calendar-admin migrate`, which records it in schema_migrations.

CREATE TABLE IF NOT EXISTS shards (
  shard_id   INT UNSIGNED NOT NULL PRIMARY KEY,
  host       VARCHAR(255) NOT NULL,
  port       INT UNSIGNED NOT NULL,
  db_name    VARCHAR(64)  NOT NULL,
  state      VARCHAR(16)  NOT NULL DEFAULT 'active',  -- active | draining
  created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- vbucket -> shard. epoch grows by one on every ownership change; it is the
-- same value the owning shard holds in its vbucket_owner row.
CREATE TABLE IF NOT EXISTS vbuckets (
  vbucket    INT UNSIGNED    NOT NULL PRIMARY KEY,
  shard_id   INT UNSIGNED    NOT NULL,
  epoch      BIGINT UNSIGNED NOT NULL,
  state      VARCHAR(16)     NOT NULL DEFAULT 'active',  -- active | moving
  KEY vbuckets_shard (shard_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Cluster-wide constants, e.g. ('num_vbuckets', '4096'). Never changed after bootstrap.
CREATE TABLE IF NOT EXISTS cluster (
  name  VARCHAR(64)  NOT NULL PRIMARY KEY,
  value VARCHAR(255) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
