-- Who is running each connection: one row while a run is under way, taken in the transaction
-- that records the run and given back in the one that ends it. The running instance renews
-- `expires_at` while it works; a row past it belongs to an instance that stopped (crash, kill),
-- and the next run takes it over, marking that instance's run failed.
CREATE TABLE sync_leases (
    connection_id TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    -- The instance running it (host, process), for the operator.
    holder        TEXT NOT NULL,
    run_id        TEXT COLLATE "C" NOT NULL,
    acquired_at   BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);

-- Runs left `running` by versions without leases have no instance that will end them.
UPDATE sync_runs
SET status = 'failed',
    report = '{"status": "failed", "conflicts": [], "warnings": [], "error": "this run was still marked running when scimd was upgraded; the instance running it had stopped"}'
WHERE status = 'running';
