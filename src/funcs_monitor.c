/*-------------------------------------------------------------------------
 *
 * funcs_monitor.c
 *	  SQL functions that show the shared-memory state: processor.devices(),
 *	  processor.device(text), processor.stats(), processor.state_info()
 *	  and processor.reset_stats() (SPEC §6).
 *
 * Each needs the shared memory of state.c and stats.c, which exists only
 * when the server preloads the library; without it each raises SQLSTATE
 * 55000.  They take no lock themselves: state.c and stats.c copy data out
 * under their own locks (for devices(), at most STATE_SCAN_CHUNK per hold)
 * and the rows are built from those copies, with no lock held.
 *
 * C symbols carry the SQL API version (_1_0), so that a newer library
 * keeps serving an older SQL install until ALTER EXTENSION UPDATE.
 * Permissions are the extension script's business (EXECUTE revoked from
 * PUBLIC, granted to pg_read_all_stats except reset_stats).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "processor.h"

/* Columns of processor.devices() and processor.device(text). */
#define DEVICE_COLS			11

/* Columns of processor.stats(). */
#define STATS_COLS			20

/* Columns of processor.state_info(). */
#define STATE_INFO_COLS		3

PG_FUNCTION_INFO_V1(processor_devices_1_0);
PG_FUNCTION_INFO_V1(processor_device_1_0);
PG_FUNCTION_INFO_V1(processor_stats_1_0);
PG_FUNCTION_INFO_V1(processor_state_info_1_0);
PG_FUNCTION_INFO_V1(processor_reset_stats_1_0);

/*
 * Raise the error of SPEC §6 unless the shared memory is there.
 */
static void
require_shared_memory(void)
{
	if (!state_enabled())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("processor must be loaded via shared_preload_libraries"),
				 errhint("Add processor to shared_preload_libraries and restart the server.")));
}

/*
 * A text datum from a UTF-8 string of shared memory, converted to the
 * database encoding (which may raise an ERROR for a character that has no
 * equivalent there).
 */
static Datum
utf8_text_datum(const char *s)
{
	if (GetDatabaseEncoding() == PG_UTF8)
		return CStringGetTextDatum(s);
	return CStringGetTextDatum(pg_any_to_server(s, strlen(s), PG_UTF8));
}

/*
 * Fill one row of devices()/device(text) from a device copy.
 */
static void
device_row(const DeviceState *d, Datum *values, bool *nulls)
{
	memset(nulls, 0, sizeof(bool) * DEVICE_COLS);
	values[0] = utf8_text_datum(d->device_id);
	values[1] = TimestampTzGetDatum(d->ts);
	values[2] = Float8GetDatum(d->lat);
	values[3] = Float8GetDatum(d->lon);
	values[4] = Float8GetDatum(d->altitude);
	nulls[4] = !d->has_altitude;
	values[5] = Float8GetDatum(d->speed);
	nulls[5] = !d->has_speed;
	values[6] = Float8GetDatum(d->heading);
	nulls[6] = !d->has_heading;
	values[7] = Int32GetDatum(d->satellites);
	nulls[7] = !d->has_satellites;
	values[8] = TimestampTzGetDatum(d->last_seen);
	values[9] = TimestampTzGetDatum(d->updated_at);
	values[10] = Int64GetDatum(d->positions_seen);
}

/*
 * processor.devices(): one row per device in shared memory.
 *
 * Materialize mode: the devices are copied out in chunks of at most
 * STATE_SCAN_CHUNK per hold of the state lock (state_scan_next), and each
 * chunk goes into the tuplestore after the lock is released.
 */
Datum
processor_devices_1_0(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	DeviceState *chunk;
	StateScan	scan;
	Datum		values[DEVICE_COLS];
	bool		nulls[DEVICE_COLS];
	int			n;
	int			i;

	require_shared_memory();
	SetSingleFuncCall(fcinfo, 0);

	chunk = palloc(sizeof(DeviceState) * STATE_SCAN_CHUNK);
	state_scan_begin(&scan);
	while (state_scan_next(&scan, chunk, &n))
	{
		for (i = 0; i < n; i++)
		{
			device_row(&chunk[i], values, nulls);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
								 values, nulls);
		}
		CHECK_FOR_INTERRUPTS();
	}
	pfree(chunk);
	return (Datum) 0;
}

/*
 * processor.device(device_id text): that device's row, or no row.  A hash
 * lookup, not a scan.
 */
Datum
processor_device_1_0(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *arg = PG_GETARG_TEXT_PP(0);
	char	   *device_id;
	DeviceState d;
	Datum		values[DEVICE_COLS];
	bool		nulls[DEVICE_COLS];

	require_shared_memory();
	SetSingleFuncCall(fcinfo, 0);

	/* device ids are kept in UTF-8 */
	device_id = text_to_cstring(arg);
	if (GetDatabaseEncoding() != PG_UTF8)
		device_id = pg_server_to_any(device_id, strlen(device_id), PG_UTF8);

	if (state_lookup(device_id, &d))
	{
		device_row(&d, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
							 values, nulls);
	}
	return (Datum) 0;
}

/*
 * Fill one row of stats() from a copy of worker "number"'s slot.
 */
static void
stats_row(int number, const WorkerStats *s, Datum *values, bool *nulls)
{
	memset(nulls, 0, sizeof(bool) * STATS_COLS);
	values[0] = Int32GetDatum(number);
	values[1] = Int32GetDatum(s->pid);
	nulls[1] = (s->pid == 0);
	values[2] = utf8_text_datum(s->consumer);
	nulls[2] = (s->consumer[0] == '\0');
	values[3] = CStringGetTextDatum(stats_status_name(s->pid == 0 ?
													  WORKER_STATUS_STOPPED :
													  s->status));
	values[4] = BoolGetDatum(s->redis_connected);
	values[5] = Int64GetDatum(s->entries_read);
	values[6] = Int64GetDatum(s->inserted);
	values[7] = Int64GetDatum(s->duplicates);
	values[8] = Int64GetDatum(s->dead_lettered);
	values[9] = Int64GetDatum(s->batches);
	values[10] = Int64GetDatum(s->db_retries);
	values[11] = Int64GetDatum(s->redis_reconnects);
	values[12] = Int64GetDatum(s->claimed);
	values[13] = TimestampTzGetDatum(s->last_batch_at);
	nulls[13] = (s->last_batch_at == 0);
	values[14] = Int64GetDatum(s->lag);
	nulls[14] = !(s->group_known && s->lag_known);
	values[15] = Int64GetDatum(s->pending);
	nulls[15] = !s->group_known;
	values[16] = Int64GetDatum(s->group_pending);
	nulls[16] = !s->group_known;
	values[17] = utf8_text_datum(s->last_error);
	nulls[17] = (s->last_error[0] == '\0');
	values[18] = TimestampTzGetDatum(s->last_error_at);
	nulls[18] = (s->last_error_at == 0);
	values[19] = TimestampTzGetDatum(s->stats_reset);
	nulls[19] = (s->stats_reset == 0);
}

/*
 * processor.stats(): one row per configured worker, numbered from 1.
 */
Datum
processor_stats_1_0(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	WorkerStats s;
	Datum		values[STATS_COLS];
	bool		nulls[STATS_COLS];
	int			nworkers;
	int			i;

	require_shared_memory();
	SetSingleFuncCall(fcinfo, 0);

	nworkers = stats_worker_count();
	for (i = 1; i <= nworkers; i++)
	{
		stats_read(i, &s);
		stats_row(i, &s, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
							 values, nulls);
	}
	return (Datum) 0;
}

/*
 * processor.state_info(): devices in shared memory, capacity
 * (processor.max_devices at startup), evictions since the last reset.
 */
Datum
processor_state_info_1_0(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[STATE_INFO_COLS];
	bool		nulls[STATE_INFO_COLS] = {0};
	int64		devices;
	int64		capacity;
	int64		evicted_total;

	require_shared_memory();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	state_get_info(&devices, &capacity, &evicted_total);
	values[0] = Int64GetDatum(devices);
	values[1] = Int64GetDatum(capacity);
	values[2] = Int64GetDatum(evicted_total);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}

/*
 * processor.reset_stats(): zero the workers' counters and evicted_total,
 * set stats_reset; the devices stay.  Superuser-only by the script's
 * grants.
 */
Datum
processor_reset_stats_1_0(PG_FUNCTION_ARGS)
{
	require_shared_memory();
	stats_reset_all();
	PG_RETURN_VOID();
}
