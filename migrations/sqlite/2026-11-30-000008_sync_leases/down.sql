DROP TABLE sync_leases;
