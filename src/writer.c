/*-------------------------------------------------------------------------
 *
 * writer.c
 *	  SPI statements for a batch's positions and dead letters, run with
 *	  the table owner's rights (SPEC §9); writer_isolation.c runs the
 *	  positions' statements in subtransactions (row-level errors, SPEC §4).
 *
 * Statements are prepared once and kept across batches (SPI_keepplan, with
 * a generic plan; the plan cache re-plans after invalidations).  Positions
 * go in by rows of VALUES_ROWS (500) parameters each,
 *
 *	INSERT INTO target (...) VALUES ($1, ..., $11), ($12, ..., $22), ...
 *	ON CONFLICT (device_id, ts) DO NOTHING
 *
 * and what is left of a call (fewer rows) from one array per column:
 *
 *	INSERT INTO target (...) SELECT * FROM unnest($1, ..., $11)
 *	ON CONFLICT (device_id, ts) DO NOTHING
 *
 * VALUES hands each row to the insert as it is; unnest first materialises
 * every array into a tuplestore of its own (eleven per call), which is
 * about a fifth of an insert's cost.  Parameters and arrays are built from
 * Datums directly, so numbers and timestamps never go through text.  Rows
 * that conflict (already in the table, or earlier in the same batch) are
 * skipped by ON CONFLICT and counted as duplicates.  A batch is tried
 * without ON CONFLICT first (writer_isolation.c, "Plain first").
 *
 * Role switch.  When the current user is a superuser and a table's owner is
 * not, the insert into that table runs as its owner under
 * SECURITY_RESTRICTED_OPERATION, as VACUUM or REFRESH MATERIALIZED VIEW do,
 * so that the owner's triggers and defaults never run with superuser
 * rights; GUC changes they make are undone with the statement.  The owner
 * is looked up once per batch (syscache), the user restored on every path.
 *
 * Callers: the worker, inside its batch transaction with SPI connected and
 * a snapshot pushed; processor.replay_dead_letters(), likewise inside the
 * caller's transaction.  Neither may be inside a subtransaction of their
 * own that an ERROR from here would have to unwind.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "processor.h"
#include "writer_internal.h"

#define DEAD_LETTER_NCOLS	5

/* A kept plan and the table GUC value it was prepared for. */
typedef struct KeptPlan
{
	SPIPlanPtr	plan;
	char	   *table;			/* malloc'd copy of the GUC value */
} KeptPlan;

/* The target's statements, by [VALUES or unnest][ON CONFLICT or plain]. */
static KeptPlan target_plans[2][2];
static KeptPlan dead_letter_plan;

/* Parameter types of the VALUES statements: target_elemtypes repeated. */
static Oid	values_argtypes[VALUES_NARGS];

static const Oid target_argtypes[TARGET_NCOLS] = {
	TEXTARRAYOID, TIMESTAMPTZARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID,
	FLOAT8ARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID, INT4ARRAYOID,
	INT4ARRAYOID, JSONBARRAYOID, TEXTARRAYOID
};

static const Oid target_elemtypes[TARGET_NCOLS] = {
	TEXTOID, TIMESTAMPTZOID, FLOAT8OID, FLOAT8OID, FLOAT8OID, FLOAT8OID,
	FLOAT8OID, INT4OID, INT4OID, JSONBOID, TEXTOID
};

static const Oid dead_letter_argtypes[DEAD_LETTER_NCOLS] = {
	TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID, TEXTARRAYOID, INT4ARRAYOID
};

static const Oid dead_letter_elemtypes[DEAD_LETTER_NCOLS] = {
	TEXTOID, TEXTOID, JSONBOID, TEXTOID, INT4OID
};

/* The column list every target statement inserts. */
#define TARGET_INSERT \
"INSERT INTO %s AS t (device_id, ts, lat, lon, altitude, speed, heading," \
" satellites, priority, attributes, stream_id)"

#define TARGET_UNNEST \
" SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)," \
" pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5)," \
" pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8)," \
" pg_catalog.unnest($9), pg_catalog.unnest($10), pg_catalog.unnest($11))"

#define TARGET_ON_CONFLICT " ON CONFLICT (device_id, ts) DO NOTHING"

/*
 * No conflict target: naming (stream, stream_id) would need SELECT on those
 * columns, and a dedicated role has only INSERT on this table (SPEC §9).
 * The table's one unique key is (stream, stream_id) anyway.
 */
static const char *dead_letter_sql =
"INSERT INTO %s AS t (stream, stream_id, fields, error, deliveries)"
" SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
" pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5))"
" ON CONFLICT DO NOTHING";

/* ----------------------------------------------------------------
 * Kept plans
 * ----------------------------------------------------------------
 */

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
	int			v;
	int			c;

	for (v = 0; v < 2; v++)
		for (c = 0; c < 2; c++)
			forget_plan(&target_plans[v][c]);
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

	/* a generic plan at once: custom plans would re-plan 5500 parameters */
	plan = SPI_prepare_cursor(sql, nargs, (Oid *) argtypes,
							  CURSOR_OPT_GENERIC_PLAN);
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

/*
 * The SQL template (the table as %s) of a target statement: VALUES_ROWS
 * rows of VALUES, or unnest; with ON CONFLICT or plain.
 */
static char *
target_sql(bool values, bool on_conflict)
{
	StringInfoData buf;
	int			r;
	int			c;

	initStringInfo(&buf);
	appendStringInfoString(&buf, TARGET_INSERT);
	if (values)
	{
		appendStringInfoString(&buf, " VALUES ");
		for (r = 0; r < VALUES_ROWS; r++)
		{
			appendStringInfoString(&buf, r > 0 ? ",(" : "(");
			for (c = 0; c < TARGET_NCOLS; c++)
				appendStringInfo(&buf, c > 0 ? ",$%d" : "$%d",
								 r * TARGET_NCOLS + c + 1);
			appendStringInfoChar(&buf, ')');
		}
	}
	else
		appendStringInfoString(&buf, TARGET_UNNEST);
	if (on_conflict)
		appendStringInfoString(&buf, TARGET_ON_CONFLICT);
	return buf.data;
}

/* The kept target statement of this kind, prepared if need be. */
SPIPlanPtr
writer_target_plan(bool values, bool on_conflict)
{
	KeptPlan   *kp = &target_plans[values][on_conflict];
	int			i;

	if (kp->plan && strcmp(kp->table, processor_target_table) == 0)
		return kp->plan;
	if (!values)
		return get_plan(kp, processor_target_table,
						target_sql(false, on_conflict), TARGET_NCOLS,
						target_argtypes);
	for (i = 0; i < VALUES_NARGS; i++)
		values_argtypes[i] = target_elemtypes[i % TARGET_NCOLS];
	return get_plan(kp, processor_target_table,
					target_sql(true, on_conflict), VALUES_NARGS,
					values_argtypes);
}

/* ----------------------------------------------------------------
 * Running as the table's owner (SPEC §9)
 * ----------------------------------------------------------------
 */

/*
 * The role to run inserts into the table named by guc_value as: its owner
 * when the current user is a superuser and the owner is not, else
 * InvalidOid (no switch).  Two or three syscache lookups; a table that does
 * not exist gives InvalidOid, and the insert itself reports it.
 */
Oid
writer_insert_role(const char *guc_value)
{
	char	   *schemaname;
	char	   *relname;
	Oid			nspid;
	Oid			relid;
	Oid			owner;
	HeapTuple	tup;

	if (!superuser())
		return InvalidOid;
	if (!processor_split_table_name(guc_value, &schemaname, &relname))
		return InvalidOid;
	nspid = get_namespace_oid(schemaname, true);
	if (!OidIsValid(nspid))
		return InvalidOid;
	relid = get_relname_relid(relname, nspid);
	if (!OidIsValid(relid))
		return InvalidOid;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);

	return superuser_arg(owner) ? InvalidOid : owner;
}

/*
 * Become role (when valid) under SECURITY_RESTRICTED_OPERATION, and open a
 * GUC nest level so that SET LOCAL or set_config() in the owner's code end
 * with the statement.  The caller has saved the user and security context
 * (GetUserIdAndSecContext) and restores them with writer_end_as_role, or in its
 * error path.  Returns the GUC nest level for writer_end_as_role.
 */
int
writer_begin_as_role(Oid role, int saved_sec_context)
{
	if (OidIsValid(role))
		SetUserIdAndSecContext(role,
							   saved_sec_context | SECURITY_RESTRICTED_OPERATION);
	return NewGUCNestLevel();
}

/*
 * Undo writer_begin_as_role after a statement that succeeded.
 */
void
writer_end_as_role(int guc_nest_level, Oid saved_user, int saved_sec_context)
{
	AtEOXact_GUC(false, guc_nest_level);
	SetUserIdAndSecContext(saved_user, saved_sec_context);
}

/* ----------------------------------------------------------------
 * Column arrays
 * ----------------------------------------------------------------
 */

/*
 * Allocate ncols column buffers of n entries for the given element types.
 */
static ColumnBuf *
make_columns(int ncols, int n, const Oid *elemtypes)
{
	ColumnBuf  *cols = palloc(sizeof(ColumnBuf) * ncols);
	int			i;

	for (i = 0; i < ncols; i++)
	{
		cols[i].values = palloc(sizeof(Datum) * Max(n, 1));
		cols[i].nulls = palloc0(sizeof(bool) * Max(n, 1));
		cols[i].elemtype = elemtypes[i];
		get_typlenbyvalalign(elemtypes[i], &cols[i].typlen,
							 &cols[i].typbyval, &cols[i].typalign);
	}
	return cols;
}

/* Store an optional value (or NULL) in row i of a column. */
static inline void
set_optional(ColumnBuf *col, int i, bool present, Datum value)
{
	col->values[i] = present ? value : (Datum) 0;
	col->nulls[i] = !present;
}

/*
 * Fill args with one array per column holding rows lo .. lo + n - 1.
 * The arrays are palloc'd in the current memory context.
 */
void
writer_column_arrays(ColumnBuf *cols, int ncols, int lo, int n, Datum *args)
{
	int			dims[1];
	int			lbs[1];
	int			i;

	dims[0] = n;
	lbs[0] = 1;
	for (i = 0; i < ncols; i++)
		args[i] = PointerGetDatum(construct_md_array(cols[i].values + lo,
													 cols[i].nulls + lo,
													 1, dims, lbs,
													 cols[i].elemtype,
													 cols[i].typlen,
													 cols[i].typbyval,
													 cols[i].typalign));
}

/*
 * Fill args and nulls (palloc'd in the current memory context) with the
 * parameters of one VALUES statement: rows lo .. lo + VALUES_ROWS - 1, row
 * by row.
 */
void
writer_values_params(ColumnBuf *cols, int lo, Datum **args, char **nulls)
{
	int			r;
	int			c;

	*args = palloc(sizeof(Datum) * VALUES_NARGS);
	*nulls = palloc(VALUES_NARGS + 1);
	for (r = 0; r < VALUES_ROWS; r++)
	{
		for (c = 0; c < TARGET_NCOLS; c++)
		{
			int			i = r * TARGET_NCOLS + c;

			(*args)[i] = cols[c].values[lo + r];
			(*nulls)[i] = cols[c].nulls[lo + r] ? 'n' : ' ';
		}
	}
	(*nulls)[VALUES_NARGS] = '\0';
}

/*
 * The target's column values of every position, built once per call.
 */
ColumnBuf *
writer_position_columns(const Position *pos, const StreamEntry *const *entries,
				 int n)
{
	ColumnBuf  *cols = make_columns(TARGET_NCOLS, n, target_elemtypes);
	int			i;

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
		cols[10].values[i] = CStringGetTextDatum(entries[i]->id);
	}
	return cols;
}

/* ----------------------------------------------------------------
 * Dead letters
 * ----------------------------------------------------------------
 */

/*
 * Run the dead-letter INSERT with args, as role if set; the user is
 * restored on every path (an ERROR goes on to the caller, whose
 * transaction abort undoes the GUC nest level).
 */
static void
execute_dead_letter_insert(SPIPlanPtr plan, Datum *args, Oid role)
{
	Oid			saved_user;
	int			saved_sec_context;

	GetUserIdAndSecContext(&saved_user, &saved_sec_context);
	PG_TRY();
	{
		int			nest_level;
		int			rc;

		nest_level = writer_begin_as_role(role, saved_sec_context);
		rc = SPI_execute_plan(plan, args, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "insert into \"%s\" failed: %s",
				 processor_dead_letter_table, SPI_result_code_string(rc));
		writer_end_as_role(nest_level, saved_user, saved_sec_context);
	}
	PG_CATCH();
	{
		SetUserIdAndSecContext(saved_user, saved_sec_context);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * Insert the dead letters (those of dead, then those of more), with
 * ON CONFLICT DO NOTHING: a redelivered batch finds its dead letters
 * already there.
 */
static void
insert_dead_letters(const DeadLetter *dead, int ndead,
					const DeadLetter *more, int nmore, const char *stream)
{
	int			n = ndead + nmore;
	ColumnBuf  *cols = make_columns(DEAD_LETTER_NCOLS, n,
									dead_letter_elemtypes);
	Datum		args[DEAD_LETTER_NCOLS];
	Datum		stream_datum = CStringGetTextDatum(stream);
	SPIPlanPtr	plan;
	int			i;

	for (i = 0; i < n; i++)
	{
		const DeadLetter *d = i < ndead ? &dead[i] : &more[i - ndead];
		Jsonb	   *fields = codec_dead_letter_fields(d->entry);

		cols[0].values[i] = stream_datum;
		cols[1].values[i] = CStringGetTextDatum(d->entry->id);
		set_optional(&cols[2], i, fields != NULL, JsonbPGetDatum(fields));
		cols[3].values[i] = CStringGetTextDatum(d->error);
		set_optional(&cols[4], i, d->deliveries > 0,
					 Int32GetDatum((int32) Min(d->deliveries, PG_INT32_MAX)));
	}
	writer_column_arrays(cols, DEAD_LETTER_NCOLS, 0, n, args);

	plan = get_plan(&dead_letter_plan, processor_dead_letter_table,
					dead_letter_sql, DEAD_LETTER_NCOLS, dead_letter_argtypes);
	execute_dead_letter_insert(plan, args,
							   writer_insert_role(processor_dead_letter_table));
}

/*
 * writer_insert_batch
 *		Insert a batch's positions and dead letters (see file header).
 *
 * entries[i] is the stream entry that positions[i] was decoded from.
 * Positions refused by a row-level error are dead-lettered along with dead.
 * dead_lettered counts the dead letters of this batch whether or not an
 * earlier delivery had already stored them; inserted + duplicates +
 * refused positions = npositions.
 *
 * Caller: inside a transaction, SPI connected, snapshot pushed.  A
 * batch-level error is raised; the caller rolls the batch back.
 */
void
writer_insert_batch(const Position *positions,
					const StreamEntry *const *entries, int npositions,
					const DeadLetter *dead, int ndead,
					const char *stream, WriteResult *result)
{
	DeadLetter *refused = NULL;
	int			nrefused = 0;

	memset(result, 0, sizeof(*result));

	if (npositions > 0)
	{
		result->inserted = writer_insert_positions(positions, entries,
												   npositions,
												   &refused, &nrefused);
		result->duplicates = npositions - result->inserted - nrefused;
	}
	if (ndead + nrefused > 0)
	{
		insert_dead_letters(dead, ndead, refused, nrefused, stream);
		result->dead_lettered = ndead + nrefused;
	}
}
