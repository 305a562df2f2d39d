/* processor--1.0.sql: SQL interface of the processor extension, version 1.0 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION processor" to load this file. \quit

/*
 * The data tables (processor.target_table, processor.dead_letter_table) are
 * created by the worker, not here, so that DROP EXTENSION never drops data.
 */

-- Decode a JSON payload as the worker would; an ERROR with the catalogue
-- message for an invalid one.  Works without shared_preload_libraries.
CREATE FUNCTION processor.decode(payload text,
	OUT device_id text, OUT ts timestamptz,
	OUT lat float8, OUT lon float8, OUT altitude float8,
	OUT speed float8, OUT heading float8,
	OUT satellites int, OUT priority int, OUT attributes jsonb)
RETURNS record
AS 'MODULE_PATHNAME', 'processor_decode_payload_1_0'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

-- Decode an entry given as its field/value pairs (either encoding).
CREATE FUNCTION processor.decode(fields jsonb,
	OUT device_id text, OUT ts timestamptz,
	OUT lat float8, OUT lon float8, OUT altitude float8,
	OUT speed float8, OUT heading float8,
	OUT satellites int, OUT priority int, OUT attributes jsonb)
RETURNS record
AS 'MODULE_PATHNAME', 'processor_decode_fields_1_0'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

REVOKE ALL ON FUNCTION processor.decode(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION processor.decode(jsonb) FROM PUBLIC;
GRANT USAGE ON SCHEMA processor TO pg_read_all_stats;
GRANT EXECUTE ON FUNCTION processor.decode(text) TO pg_read_all_stats;
GRANT EXECUTE ON FUNCTION processor.decode(jsonb) TO pg_read_all_stats;

/*
 * Monitoring: device state and worker statistics in shared memory
 * (funcs_monitor.c).  Each of these needs the library in
 * shared_preload_libraries and otherwise raises SQLSTATE 55000.
 */

-- One row per device in shared memory: its latest position (greatest ts).
CREATE FUNCTION processor.devices(
	OUT device_id text, OUT ts timestamptz,
	OUT lat float8, OUT lon float8, OUT altitude float8,
	OUT speed float8, OUT heading float8, OUT satellites int,
	OUT last_seen timestamptz, OUT updated_at timestamptz,
	OUT positions_seen bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'processor_devices_1_0'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

-- One device's row, or no row: a hash lookup.
CREATE FUNCTION processor.device(device_id text,
	OUT device_id text, OUT ts timestamptz,
	OUT lat float8, OUT lon float8, OUT altitude float8,
	OUT speed float8, OUT heading float8, OUT satellites int,
	OUT last_seen timestamptz, OUT updated_at timestamptz,
	OUT positions_seen bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'processor_device_1_0'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE ROWS 1;

-- One row per configured worker (processor.workers), numbered from 1.
CREATE FUNCTION processor.stats(
	OUT worker int, OUT pid int, OUT consumer text, OUT status text,
	OUT redis_connected bool,
	OUT entries_read bigint, OUT inserted bigint, OUT duplicates bigint,
	OUT dead_lettered bigint, OUT batches bigint, OUT db_retries bigint,
	OUT redis_reconnects bigint, OUT claimed bigint,
	OUT last_batch_at timestamptz, OUT lag bigint, OUT pending bigint,
	OUT group_pending bigint, OUT last_error text,
	OUT last_error_at timestamptz, OUT stats_reset timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'processor_stats_1_0'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

-- Size of the device table.
CREATE FUNCTION processor.state_info(
	OUT devices bigint, OUT capacity bigint, OUT evicted_total bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'processor_state_info_1_0'
LANGUAGE C STRICT VOLATILE PARALLEL SAFE;

-- Zero the counters and evicted_total, set stats_reset; devices stay.
CREATE FUNCTION processor.reset_stats()
RETURNS void
AS 'MODULE_PATHNAME', 'processor_reset_stats_1_0'
LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;

CREATE VIEW processor.device_state AS
	SELECT * FROM processor.devices();

CREATE VIEW processor.worker_stats AS
	SELECT * FROM processor.stats();

-- Read access for pg_read_all_stats (USAGE on the schema is granted
-- above); reset_stats is for superusers only.
REVOKE ALL ON FUNCTION processor.devices() FROM PUBLIC;
REVOKE ALL ON FUNCTION processor.device(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION processor.stats() FROM PUBLIC;
REVOKE ALL ON FUNCTION processor.state_info() FROM PUBLIC;
REVOKE ALL ON FUNCTION processor.reset_stats() FROM PUBLIC;
REVOKE ALL ON processor.device_state FROM PUBLIC;
REVOKE ALL ON processor.worker_stats FROM PUBLIC;
GRANT EXECUTE ON FUNCTION processor.devices() TO pg_read_all_stats;
GRANT EXECUTE ON FUNCTION processor.device(text) TO pg_read_all_stats;
GRANT EXECUTE ON FUNCTION processor.stats() TO pg_read_all_stats;
GRANT EXECUTE ON FUNCTION processor.state_info() TO pg_read_all_stats;
GRANT SELECT ON processor.device_state TO pg_read_all_stats;
GRANT SELECT ON processor.worker_stats TO pg_read_all_stats;

/*
 * Dead letters (replay.c): decode them again, e.g. after a producer fix or
 * after the database stopped refusing them, move those now valid into the
 * target table and return how many moved and how many remain.  Superusers
 * only; needs shared_preload_libraries.
 */
CREATE FUNCTION processor.replay_dead_letters(since timestamptz DEFAULT NULL,
	OUT replayed bigint, OUT remaining bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'processor_replay_dead_letters_1_0'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION processor.replay_dead_letters(timestamptz) FROM PUBLIC;
