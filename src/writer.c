/*-------------------------------------------------------------------------
 *
 * writer.c
 *	  SPI insert of a batch's positions and dead letters.
 *
 * Each table gets one statement, prepared once and kept across batches
 * (SPI_keepplan; the plan cache re-plans it after invalidations), that
 * inserts a whole batch from one array per column:
 *
 *	INSERT INTO target (...) SELECT * FROM unnest($1, ..., $11)
 *	ON CONFLICT (device_id, ts) DO NOTHING
 *
 * The arrays are built from Datums directly, so numbers and timestamps never
 * go through text.  Rows that conflict (already in the table, or earlier in
 * the same batch) are skipped by ON CONFLICT and counted as duplicates.
 *
 * Callers: the worker, inside its batch transaction with SPI connected and
 * a snapshot pushed.  Every database error is raised; the caller rolls the
 * batch back.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/lsyscache.h"

#include "processor.h"

#define TARGET_NCOLS		11
#define DEAD_LETTER_NCOLS	5

/* A kept plan and the table GUC value it was prepared for. */
typedef struct KeptPlan
{
	SPIPlanPtr	plan;
	char	   *table;			/* malloc'd copy of the GUC value */
} KeptPlan;

static KeptPlan target_plan;
static KeptPlan dead_letter_plan;

static const Oid target_argtypes[TARGET_NCOLS] = {
	TEXTARRAYOID, TIMESTAMPTZARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID,
	FLOAT8ARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID, INT4ARRAYOID,
	INT4ARRAYOID, JSONBARRAYOID, TEXTARRAYOID
};

static const Oid dead_letter_argtypes[DEAD_LETTER_NCOLS] = {
	TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID, TEXTARRAYOID, INT4ARRAYOID
};

static const char *target_sql =
"INSERT INTO %s AS t (device_id, ts, lat, lon, altitude, speed, heading,"
" satellites, priority, attributes, stream_id)"
" SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
" pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
" pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
" pg_catalog.unnest($9), pg_catalog.unnest($10), pg_catalog.unnest($11))"
" ON CONFLICT (device_id, ts) DO NOTHING";

static const char *dead_letter_sql =
"INSERT INTO %s AS t (stream, stream_id, fields, error, deliveries)"
" SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
" pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5))"
" ON CONFLICT (stream, stream_id) DO NOTHING";

/*
 * Forget a kept plan.
 */
static void
forget_plan(KeptPlan *kp)
{
	if (kp->plan)
		SPI_freeplan(kp->plan);
	kp->plan = NULL;
	if (kp->table)
		free(kp->table);
	kp->table = NULL;
}

/*
 * writer_reset_plans
 *		Drop both kept plans; the next batch prepares them again.
 */
void
writer_reset_plans(void)
{
	forget_plan(&target_plan);
	forget_plan(&dead_letter_plan);
}

/*
 * Return the kept plan for sql_template on the table named by guc_value,
 * preparing it when there is none or the GUC changed since.
 */
static SPIPlanPtr
get_plan(KeptPlan *kp, const char *guc_value, const char *sql_template,
		 int nargs, const Oid *argtypes)
{
	char	   *schemaname;
	char	   *relname;
	char	   *sql;
	SPIPlanPtr	plan;

	if (kp->plan && strcmp(kp->table, guc_value) == 0)
		return kp->plan;
	forget_plan(kp);

	if (!processor_split_table_name(guc_value, &schemaname, &relname))
		elog(ERROR, "invalid table name \"%s\"", guc_value);
	sql = psprintf(sql_template,
				   quote_qualified_identifier(schemaname, relname));

	plan = SPI_prepare(sql, nargs, (Oid *) argtypes);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");

	kp->table = strdup(guc_value);
	if (kp->table == NULL)
	{
		SPI_freeplan(plan);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
						errmsg("out of memory")));
	}
	kp->plan = plan;
	return plan;
}

/* One column's values while a batch is being turned into arrays. */
typedef struct ColumnBuf
{
	Datum	   *values;
	bool	   *nulls;
	bool		any_null;
} ColumnBuf;

/*
 * Turn a column buffer into an array Datum of elemtype.
 */
static Datum
column_array(ColumnBuf *col, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1];
	int			lbs[1];

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	dims[0] = n;
	lbs[0] = 1;
	return PointerGetDatum(construct_md_array(col->values,
											  col->any_null ? col->nulls : NULL,
											  1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

/*
 * Allocate ncols column buffers of n entries.
 */
static ColumnBuf *
make_columns(int ncols, int n)
{
	ColumnBuf  *cols = palloc(sizeof(ColumnBuf) * ncols);
	int			i;

	for (i = 0; i < ncols; i++)
	{
		cols[i].values = palloc(sizeof(Datum) * n);
		cols[i].nulls = palloc0(sizeof(bool) * n);
		cols[i].any_null = false;
	}
	return cols;
}

/* Store an optional value (or NULL) in row i of a column. */
static inline void
set_optional(ColumnBuf *col, int i, bool present, Datum value)
{
	col->values[i] = present ? value : (Datum) 0;
	col->nulls[i] = !present;
	if (!present)
		col->any_null = true;
}

/*
 * Insert the positions; returns how many rows were actually inserted.
 */
static int64
insert_positions(const Position *pos, const char *const *ids, int n)
{
	static const Oid elemtypes[TARGET_NCOLS] = {
		TEXTOID, TIMESTAMPTZOID, FLOAT8OID, FLOAT8OID, FLOAT8OID, FLOAT8OID,
		FLOAT8OID, INT4OID, INT4OID, JSONBOID, TEXTOID
	};
	ColumnBuf  *cols = make_columns(TARGET_NCOLS, n);
	Datum		args[TARGET_NCOLS];
	SPIPlanPtr	plan;
	int			i;
	int			rc;

	for (i = 0; i < n; i++)
	{
		const Position *p = &pos[i];

		cols[0].values[i] = CStringGetTextDatum(p->device_id);
		cols[1].values[i] = TimestampTzGetDatum(p->ts);
		cols[2].values[i] = Float8GetDatum(p->lat);
		cols[3].values[i] = Float8GetDatum(p->lon);
		set_optional(&cols[4], i, p->has_altitude, Float8GetDatum(p->altitude));
		set_optional(&cols[5], i, p->has_speed, Float8GetDatum(p->speed));
		set_optional(&cols[6], i, p->has_heading, Float8GetDatum(p->heading));
		set_optional(&cols[7], i, p->has_satellites, Int32GetDatum(p->satellites));
		set_optional(&cols[8], i, p->has_priority, Int32GetDatum(p->priority));
		cols[9].values[i] = JsonbPGetDatum(p->attributes);
		cols[10].values[i] = CStringGetTextDatum(ids[i]);
	}
	for (i = 0; i < TARGET_NCOLS; i++)
		args[i] = column_array(&cols[i], n, elemtypes[i]);

	plan = get_plan(&target_plan, processor_target_table, target_sql,
					TARGET_NCOLS, target_argtypes);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "insert into \"%s\" failed: %s",
			 processor_target_table, SPI_result_code_string(rc));
	return (int64) SPI_processed;
}

/*
 * Insert the dead letters; returns how many rows were actually inserted
 * (a redelivered batch finds its dead letters already there).
 */
static int64
insert_dead_letters(const DeadLetter *dead, int n, const char *stream)
{
	static const Oid elemtypes[DEAD_LETTER_NCOLS] = {
		TEXTOID, TEXTOID, JSONBOID, TEXTOID, INT4OID
	};
	ColumnBuf  *cols = make_columns(DEAD_LETTER_NCOLS, n);
	Datum		args[DEAD_LETTER_NCOLS];
	Datum		stream_datum = CStringGetTextDatum(stream);
	SPIPlanPtr	plan;
	int			i;
	int			rc;

	for (i = 0; i < n; i++)
	{
		Jsonb	   *fields = codec_dead_letter_fields(dead[i].entry);

		cols[0].values[i] = stream_datum;
		cols[1].values[i] = CStringGetTextDatum(dead[i].entry->id);
		set_optional(&cols[2], i, fields != NULL, JsonbPGetDatum(fields));
		cols[3].values[i] = CStringGetTextDatum(dead[i].error);
		set_optional(&cols[4], i, dead[i].deliveries > 0,
					 Int32GetDatum((int32) Min(dead[i].deliveries, PG_INT32_MAX)));
	}
	for (i = 0; i < DEAD_LETTER_NCOLS; i++)
		args[i] = column_array(&cols[i], n, elemtypes[i]);

	plan = get_plan(&dead_letter_plan, processor_dead_letter_table,
					dead_letter_sql, DEAD_LETTER_NCOLS, dead_letter_argtypes);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "insert into \"%s\" failed: %s",
			 processor_dead_letter_table, SPI_result_code_string(rc));
	return (int64) SPI_processed;
}

/*
 * writer_insert_batch
 *		Insert a batch's positions and dead letters (see file header).
 *
 * Caller: inside a transaction, SPI connected, snapshot pushed.
 * dead_lettered counts the dead letters of this batch whether or not an
 * earlier delivery had already stored them.
 */
void
writer_insert_batch(const Position *positions, const char *const *stream_ids,
					int npositions, const DeadLetter *dead, int ndead,
					const char *stream, WriteResult *result)
{
	memset(result, 0, sizeof(*result));

	if (npositions > 0)
	{
		result->inserted = insert_positions(positions, stream_ids, npositions);
		result->duplicates = npositions - result->inserted;
	}
	if (ndead > 0)
	{
		insert_dead_letters(dead, ndead, stream);
		result->dead_lettered = ndead;
	}
}
