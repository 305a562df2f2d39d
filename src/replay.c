/*-------------------------------------------------------------------------
 *
 * replay.c
 *	  processor.replay_dead_letters(since): decode dead letters again and
 *	  move those now valid into the target table (SPEC §6).
 *
 * After a producer fix, or after the database stopped refusing a row (a
 * CHECK constraint dropped, a partition created), an operator replays the
 * dead-letter table: each row with fields is turned back into a stream entry
 * (funcs_entry_from_jsonb, as processor.decode(jsonb) does) and decoded with
 * the worker's codec and limits.  Those that decode are inserted through
 * writer_insert_positions -- ON CONFLICT DO NOTHING, row-level isolation,
 * the target owner's rights -- and deleted from the dead-letter table;
 * a row that is still invalid, or that the database still refuses, stays
 * as it is, and so does a row without fields (an entry deleted from the
 * stream).  The result counts the rows moved (a position already in the
 * target counts: its dead letter is resolved) and the rows that remain in
 * the window (failed_at >= since, or all).
 *
 * The dead letters are read through a cursor in chunks of REPLAY_CHUNK,
 * locked FOR UPDATE, so that two replays never move a row twice; one
 * transaction (the caller's) holds the whole replay.
 *
 * Like every function but processor.decode it requires the library in
 * shared_preload_libraries (SQLSTATE 55000 otherwise).  EXECUTE is revoked
 * from PUBLIC: superusers only (SPEC §6).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "processor.h"

/* Dead letters decoded and inserted per cursor fetch. */
#define REPLAY_CHUNK		1000

/* Columns of the result. */
#define REPLAY_NCOLUMNS		2

PG_FUNCTION_INFO_V1(processor_replay_dead_letters_1_0);

/* The dead letters of one fetch. */
typedef struct ReplayChunk
{
	int			nrows;
	char	  **streams;		/* per row */
	StreamEntry *entries;		/* per row; id = its stream_id */
	Position   *positions;		/* the rows that decode */
	const StreamEntry **position_entries;
	int			npositions;
} ReplayChunk;

/*
 * SPEC §6: every function but decode needs the preloaded library.
 */
static void
require_preload(void)
{
	if (!state_enabled())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("processor must be loaded via shared_preload_libraries"),
				 errhint("Add processor to shared_preload_libraries and restart the server.")));
	if (GetDatabaseEncoding() != PG_UTF8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("processor requires a database with UTF8 encoding"),
				 errdetail("The current database uses encoding \"%s\".",
						   GetDatabaseEncodingName())));
}

/*
 * The dead-letter table's name, quoted and qualified, from the GUC.
 */
static char *
dead_letter_table_name(void)
{
	char	   *schemaname;
	char	   *relname;

	if (!processor_split_table_name(processor_dead_letter_table,
									&schemaname, &relname))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid processor.dead_letter_table \"%s\"",
						processor_dead_letter_table)));
	return quote_qualified_identifier(schemaname, relname);
}

/*
 * Turn the fetched rows (stream, stream_id, fields) into entries and decode
 * them.  Everything is palloc'd in the current memory context.
 */
static void
decode_chunk(SPITupleTable *tuptable, int nrows, ReplayChunk *c)
{
	TupleDesc	desc = tuptable->tupdesc;
	int			i;

	c->nrows = nrows;
	c->streams = palloc(sizeof(char *) * nrows);
	c->entries = palloc0(sizeof(StreamEntry) * nrows);
	c->positions = palloc(sizeof(Position) * nrows);
	c->position_entries = palloc(sizeof(StreamEntry *) * nrows);
	c->npositions = 0;

	for (i = 0; i < nrows; i++)
	{
		HeapTuple	tup = tuptable->vals[i];
		char	   *error = NULL;
		bool		isnull;
		Datum		fields;

		c->streams[i] = SPI_getvalue(tup, desc, 1);
		fields = SPI_getbinval(tup, desc, 3, &isnull);
		if (isnull)
			continue;			/* the query leaves these out anyway */
		funcs_entry_from_jsonb(DatumGetJsonbP(fields), &c->entries[i]);
		c->entries[i].id = SPI_getvalue(tup, desc, 2);

		if (codec_decode_entry(&c->entries[i], processor_max_entry_bytes,
							   &c->positions[c->npositions], &error))
			c->position_entries[c->npositions++] = &c->entries[i];
	}
}

/*
 * Delete the dead letters of the chunk's positions that the target took
 * (inserted or already there), i.e. all but the refused ones.  Returns how
 * many rows were deleted.
 */
static uint64
delete_replayed(ReplayChunk *c, const DeadLetter *refused, int nrefused,
				const char *table)
{
	static Oid	argtypes[2] = {TEXTARRAYOID, TEXTARRAYOID};
	bool	   *keep = palloc0(sizeof(bool) * c->nrows);
	Datum	   *streams = palloc(sizeof(Datum) * c->nrows);
	Datum	   *ids = palloc(sizeof(Datum) * c->nrows);
	Datum		args[2];
	int			n = 0;
	int			i;
	char	   *sql;

	for (i = 0; i < nrefused; i++)
		keep[refused[i].entry - c->entries] = true;
	for (i = 0; i < c->npositions; i++)
	{
		int			row = c->position_entries[i] - c->entries;

		if (keep[row])
			continue;
		streams[n] = CStringGetTextDatum(c->streams[row]);
		ids[n] = CStringGetTextDatum(c->entries[row].id);
		n++;
	}
	if (n == 0)
		return 0;

	args[0] = PointerGetDatum(construct_array(streams, n, TEXTOID, -1, false,
											  TYPALIGN_INT));
	args[1] = PointerGetDatum(construct_array(ids, n, TEXTOID, -1, false,
											  TYPALIGN_INT));
	sql = psprintf("DELETE FROM %s AS d"
				   " USING ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2))"
				   " AS u(stream, stream_id)"
				   " WHERE d.stream OPERATOR(pg_catalog.=) u.stream"
				   " AND d.stream_id OPERATOR(pg_catalog.=) u.stream_id",
				   table);
	if (SPI_execute_with_args(sql, 2, argtypes, args, NULL, false, 0) !=
		SPI_OK_DELETE)
		elog(ERROR, "could not delete replayed dead letters from %s", table);
	return SPI_processed;
}

/*
 * Replay every dead letter the cursor yields; returns how many moved.
 */
static int64
replay_cursor(Portal portal, const char *table)
{
	MemoryContext chunk_cxt;
	MemoryContext old;
	int64		replayed = 0;

	chunk_cxt = AllocSetContextCreate(CurrentMemoryContext,
									  "processor replay chunk",
									  ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		SPITupleTable *tuptable;
		ReplayChunk chunk;
		DeadLetter *refused;
		int			nrefused;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, REPLAY_CHUNK);
		if (SPI_processed == 0)
			break;
		tuptable = SPI_tuptable;

		old = MemoryContextSwitchTo(chunk_cxt);
		decode_chunk(tuptable, (int) SPI_processed, &chunk);
		(void) writer_insert_positions(chunk.positions,
									   chunk.position_entries,
									   chunk.npositions,
									   &refused, &nrefused);
		replayed += delete_replayed(&chunk, refused, nrefused, table);
		MemoryContextSwitchTo(old);

		SPI_freetuptable(tuptable);
		MemoryContextReset(chunk_cxt);
	}
	MemoryContextDelete(chunk_cxt);
	return replayed;
}

/*
 * How many dead letters are in the window now (since NULL: all).
 */
static int64
count_remaining(const char *table, bool has_since, Datum since)
{
	Oid			argtype = TIMESTAMPTZOID;
	char	   *sql;
	bool		isnull;
	Datum		count;

	sql = psprintf("SELECT pg_catalog.count(*) FROM %s%s", table,
				   has_since ?
				   " WHERE failed_at OPERATOR(pg_catalog.>=) $1" : "");
	/* not read-only: the count must see this call's deletions */
	if (SPI_execute_with_args(sql, has_since ? 1 : 0, &argtype, &since,
							  NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not count the dead letters in %s", table);
	count = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
						  &isnull);
	return isnull ? 0 : DatumGetInt64(count);
}

/*
 * processor.replay_dead_letters(since timestamptz DEFAULT NULL)
 *		RETURNS (replayed bigint, remaining bigint); see the file header.
 */
Datum
processor_replay_dead_letters_1_0(PG_FUNCTION_ARGS)
{
	bool		has_since = !PG_ARGISNULL(0);
	Datum		since = has_since ? PG_GETARG_DATUM(0) : (Datum) 0;
	Oid			argtype = TIMESTAMPTZOID;
	TupleDesc	tupdesc;
	Datum		values[REPLAY_NCOLUMNS];
	bool		nulls[REPLAY_NCOLUMNS] = {false, false};
	const char *table;
	char	   *sql;
	Portal		portal;
	int64		replayed;
	int64		remaining;

	require_preload();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	table = dead_letter_table_name();
	/*
	 * Dead letters whose stored fields cannot stand for the entry are never
	 * replayed: jsonb keeps one of duplicate keys, and NUL bytes, invalid
	 * UTF-8 and oversized values were escaped or cut when they were stored.
	 */
	sql = psprintf("SELECT stream, stream_id, fields FROM %s"
				   " WHERE fields IS NOT NULL"
				   " AND NOT pg_catalog.starts_with(error, 'duplicate key: ')"
				   " AND NOT pg_catalog.starts_with(error, 'entry too large: ')"
				   " AND pg_catalog.strpos(error, 'UTF-8') = 0"
				   " AND pg_catalog.strpos(error, 'control character') = 0"
				   "%s FOR UPDATE", table,
				   has_since ?
				   " AND failed_at OPERATOR(pg_catalog.>=) $1" : "");
	portal = SPI_cursor_open_with_args(NULL, sql, has_since ? 1 : 0,
									   &argtype, &since, NULL, false, 0);
	replayed = replay_cursor(portal, table);
	SPI_cursor_close(portal);
	remaining = count_remaining(table, has_since, since);
	SPI_finish();

	values[0] = Int64GetDatum(replayed);
	values[1] = Int64GetDatum(remaining);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
