--
-- monitor.sql: the shared-memory SQL interface of SPEC §6 (devices(),
-- device(text), stats(), state_info(), reset_stats(), the views
-- device_state and worker_stats): signatures, permissions, and their
-- output on a server that preloads processor with the worker paused
-- (test/regress.conf: processor.enabled = off).
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS processor;
RESET client_min_messages;

-- Signatures and C symbols (versioned).
SELECT p.oid::regprocedure AS function,
       pg_get_function_result(p.oid) AS result,
       p.prosrc AS symbol, p.proretset AS set, p.provolatile AS vol
  FROM pg_proc p
 WHERE p.pronamespace = 'processor'::regnamespace
   AND p.proname IN ('devices', 'device', 'stats', 'state_info', 'reset_stats')
 ORDER BY p.proname;

-- Columns, in order, of every function and view.
SELECT p.proname AS function, a.ord, a.name, a.type::regtype
  FROM pg_proc p,
       unnest(p.proargnames, p.proallargtypes, p.proargmodes)
         WITH ORDINALITY AS a(name, type, mode, ord)
 WHERE p.pronamespace = 'processor'::regnamespace
   AND p.proname IN ('devices', 'device', 'stats', 'state_info')
   AND a.mode IN ('i', 'o')
 ORDER BY p.proname, a.ord;
SELECT attrelid::regclass AS view, attnum, attname, atttypid::regtype
  FROM pg_attribute
 WHERE attrelid IN ('processor.device_state'::regclass,
                    'processor.worker_stats'::regclass)
   AND attnum > 0
 ORDER BY attrelid::regclass::text, attnum;

-- Privileges: nothing for PUBLIC, reading for pg_read_all_stats,
-- reset_stats for superusers only.
SELECT p.oid::regprocedure AS function,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public,
       has_function_privilege('pg_read_all_stats', p.oid, 'EXECUTE') AS read_all_stats
  FROM pg_proc p
 WHERE p.pronamespace = 'processor'::regnamespace
   AND p.proname IN ('devices', 'device', 'stats', 'state_info', 'reset_stats')
 ORDER BY p.proname;
SELECT c.oid::regclass AS view,
       has_table_privilege('public', c.oid, 'SELECT') AS public,
       has_table_privilege('pg_read_all_stats', c.oid, 'SELECT') AS read_all_stats
  FROM pg_class c
 WHERE c.oid IN ('processor.device_state'::regclass,
                 'processor.worker_stats'::regclass)
 ORDER BY 1::text;
SELECT has_schema_privilege('pg_read_all_stats', 'processor', 'USAGE')
       AS read_all_stats_schema_usage;

-- A plain role, even with USAGE on the schema, may call none of them.
CREATE ROLE regress_processor_plain;
GRANT USAGE ON SCHEMA processor TO regress_processor_plain;
SET ROLE regress_processor_plain;
SELECT * FROM processor.devices();
SELECT * FROM processor.device('d1');
SELECT * FROM processor.stats();
SELECT * FROM processor.state_info();
SELECT processor.reset_stats();
SELECT * FROM processor.device_state;
SELECT * FROM processor.worker_stats;
RESET ROLE;

-- A member of pg_read_all_stats reads everything but cannot reset.
CREATE ROLE regress_processor_monitor IN ROLE pg_read_all_stats;
SET ROLE regress_processor_monitor;
SELECT * FROM processor.state_info();
SELECT count(*) FROM processor.devices();
SELECT count(*) FROM processor.device_state;
SELECT * FROM processor.device('d1');
SELECT count(*) AS workers FROM processor.worker_stats;
SELECT processor.reset_stats();
RESET ROLE;

-- Device lookups that cannot match: unknown, over 64 bytes, NULL.
SELECT count(*) FROM processor.device('no such device');
SELECT count(*) FROM processor.device(repeat('x', 65));
SELECT count(*) FROM processor.device(NULL);

-- The one configured worker is running but paused (processor.enabled =
-- off); wait for it to say so, since it may still be starting.
DO $$
BEGIN
	FOR i IN 1 .. 600 LOOP
		EXIT WHEN (SELECT status FROM processor.stats() WHERE worker = 1)
				  = 'paused';
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
\x on
SELECT worker, pid IS NOT NULL AS has_pid, consumer LIKE '%-1' AS consumer_n,
       status, redis_connected, entries_read, inserted, duplicates,
       dead_lettered, batches, db_retries, redis_reconnects, claimed,
       last_batch_at, lag, pending, group_pending, last_error,
       last_error_at, stats_reset <= now() AS stats_reset_past
  FROM processor.worker_stats;
\x off
SELECT pid = (SELECT pid FROM pg_stat_activity
               WHERE backend_type = 'processor') AS pid_matches
  FROM processor.stats();

-- reset_stats() moves stats_reset forward and keeps the devices.
SELECT stats_reset AS reset_before FROM processor.stats() WHERE worker = 1 \gset
SELECT pg_sleep(0.01);
SELECT processor.reset_stats();
SELECT stats_reset > :'reset_before'::timestamptz AS reset_moved,
       entries_read + inserted + duplicates + dead_lettered + batches
       + db_retries + redis_reconnects + claimed AS counters
  FROM processor.stats();
SELECT * FROM processor.state_info();

DROP ROLE regress_processor_monitor;
REVOKE USAGE ON SCHEMA processor FROM regress_processor_plain;
DROP ROLE regress_processor_plain;
