/*-------------------------------------------------------------------------
 *
 * tables.c
 *	  Existence, creation and validation of the target and dead-letter
 *	  tables (SPEC §2).
 *
 * The tables belong to the user, not to the extension: the worker creates a
 * missing one (CREATE TABLE IF NOT EXISTS under a transaction-level advisory
 * lock, since several workers or servers may start at once) and otherwise
 * only checks that an existing one can take its rows.  A table that does not
 * fit is reported, never altered.
 *
 * Callers: the worker, inside a transaction with SPI connected and a
 * snapshot pushed.  Problems the user can fix come back as a message;
 * anything else (permission denied on CREATE, say) raises an ERROR that the
 * worker's error recovery turns into a backoff.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "parser/parse_coerce.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "processor.h"

/*
 * Advisory lock key (classid, objid) serialising table creation among
 * workers and servers: "proc" in ASCII, then 1.
 */
#define TABLES_LOCK_CLASSID		0x70726f63
#define TABLES_LOCK_OBJID		1

/* A column the worker writes, with the type of the value it supplies. */
typedef struct RequiredColumn
{
	const char *name;
	Oid			type;
} RequiredColumn;

static const RequiredColumn target_columns[] = {
	{"device_id", TEXTOID},
	{"ts", TIMESTAMPTZOID},
	{"lat", FLOAT8OID},
	{"lon", FLOAT8OID},
	{"altitude", FLOAT8OID},
	{"speed", FLOAT8OID},
	{"heading", FLOAT8OID},
	{"satellites", INT4OID},
	{"priority", INT4OID},
	{"attributes", JSONBOID},
	{"stream_id", TEXTOID},
	{NULL, InvalidOid}
};

static const RequiredColumn dead_letter_columns[] = {
	{"stream", TEXTOID},
	{"stream_id", TEXTOID},
	{"fields", JSONBOID},
	{"error", TEXTOID},
	{"deliveries", INT4OID},
	{NULL, InvalidOid}
};

/* %s is the quoted, qualified table name. */
static const char *target_ddl =
"CREATE TABLE IF NOT EXISTS %s ("
"  device_id   text             NOT NULL,"
"  ts          timestamptz      NOT NULL,"
"  lat         double precision NOT NULL,"
"  lon         double precision NOT NULL,"
"  altitude    double precision,"
"  speed       double precision,"
"  heading     double precision,"
"  satellites  integer,"
"  priority    integer,"
"  attributes  jsonb            NOT NULL DEFAULT '{}',"
"  stream_id   text,"
"  received_at timestamptz      NOT NULL DEFAULT pg_catalog.now(),"
"  PRIMARY KEY (device_id, ts))";

static const char *dead_letter_ddl =
"CREATE TABLE IF NOT EXISTS %s ("
"  stream      text        NOT NULL,"
"  stream_id   text        NOT NULL,"
"  fields      jsonb,"
"  error       text        NOT NULL,"
"  deliveries  integer,"
"  failed_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),"
"  UNIQUE (stream, stream_id))";

/*
 * Create the table from ddl if it does not exist.  Returns its OID, or
 * InvalidOid with *problem set when the schema is missing.
 */
static Oid
create_if_missing(const char *schemaname, const char *relname,
				  const char *ddl, char **problem)
{
	RangeVar   *rv = makeRangeVar(pstrdup(schemaname), pstrdup(relname), -1);
	Oid			relid;
	StringInfoData sql;

	relid = RangeVarGetRelid(rv, AccessShareLock, true);
	if (OidIsValid(relid))
		return relid;

	if (!OidIsValid(get_namespace_oid(schemaname, true)))
	{
		*problem = psprintf("schema \"%s\" of table \"%s\" does not exist",
							schemaname, relname);
		return InvalidOid;
	}

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT pg_catalog.pg_advisory_xact_lock(%d, %d)",
					 TABLES_LOCK_CLASSID, TABLES_LOCK_OBJID);
	if (SPI_execute(sql.data, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not take the table creation lock");

	resetStringInfo(&sql);
	appendStringInfo(&sql, ddl,
					 quote_qualified_identifier(schemaname, relname));
	if (SPI_execute(sql.data, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not create table \"%s.%s\"", schemaname, relname);

	ereport(LOG,
			(errmsg("processor created table \"%s.%s\"", schemaname, relname)));

	return RangeVarGetRelid(rv, AccessShareLock, false);
}

/*
 * Check that every column the worker writes exists and accepts the worker's
 * value by assignment, and that no other column demands a value the worker
 * does not give.  Returns NULL when fine, else a message.
 */
static char *
check_columns(Relation rel, const RequiredColumn *columns)
{
	TupleDesc	desc = RelationGetDescr(rel);
	const char *relname = RelationGetRelationName(rel);
	const RequiredColumn *col;
	int			i;

	for (col = columns; col->name != NULL; col++)
	{
		AttrNumber	attnum = get_attnum(RelationGetRelid(rel), col->name);
		Oid			atttype;

		if (attnum == InvalidAttrNumber)
			return psprintf("table \"%s\" has no column \"%s\"",
							relname, col->name);
		atttype = TupleDescAttr(desc, attnum - 1)->atttypid;
		if (!can_coerce_type(1, &col->type, &atttype, COERCION_ASSIGNMENT))
			return psprintf("column \"%s\" of table \"%s\" has type %s, which cannot take a value of type %s",
							col->name, relname, format_type_be(atttype),
							format_type_be(col->type));
	}

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		ours = false;

		if (att->attisdropped || !att->attnotnull || att->atthasdef ||
			att->attidentity || att->attgenerated)
			continue;
		for (col = columns; col->name != NULL; col++)
			if (strcmp(col->name, NameStr(att->attname)) == 0)
				ours = true;
		if (!ours)
			return psprintf("column \"%s\" of table \"%s\" is NOT NULL without a default, and the worker does not fill it",
							NameStr(att->attname), relname);
	}
	return NULL;
}

/*
 * Is indexoid a unique index usable as the ON CONFLICT arbiter for exactly
 * the columns (a, b), in either order?
 */
static bool
is_arbiter_index(Oid indexoid, AttrNumber a, AttrNumber b)
{
	HeapTuple	tup;
	Form_pg_index idx;
	bool		ok;

	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
	if (!HeapTupleIsValid(tup))
		return false;
	idx = (Form_pg_index) GETSTRUCT(tup);

	/* deferrable constraints cannot be ON CONFLICT arbiters */
	ok = idx->indisunique && idx->indimmediate && idx->indisvalid &&
		idx->indnkeyatts == 2 &&
		heap_attisnull(tup, Anum_pg_index_indexprs, NULL) &&
		heap_attisnull(tup, Anum_pg_index_indpred, NULL) &&
		((idx->indkey.values[0] == a && idx->indkey.values[1] == b) ||
		 (idx->indkey.values[0] == b && idx->indkey.values[1] == a));

	ReleaseSysCache(tup);
	return ok;
}

/*
 * Check that the table has a unique index or primary key on exactly
 * (col_a, col_b).  Returns NULL when fine, else a message.
 */
static char *
check_unique_key(Relation rel, const char *col_a, const char *col_b)
{
	AttrNumber	a = get_attnum(RelationGetRelid(rel), col_a);
	AttrNumber	b = get_attnum(RelationGetRelid(rel), col_b);
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		found = false;

	foreach(lc, indexes)
	{
		if (is_arbiter_index(lfirst_oid(lc), a, b))
		{
			found = true;
			break;
		}
	}
	list_free(indexes);

	if (found)
		return NULL;
	return psprintf("table \"%s\" has no unique index or primary key on exactly (%s, %s)",
					RelationGetRelationName(rel), col_a, col_b);
}

/*
 * Make sure one table exists and fits.  Returns true when it does; else
 * false with *problem set.
 */
static bool
ensure_table(const char *guc_value, const char *ddl,
			 const RequiredColumn *columns,
			 const char *key_a, const char *key_b, char **problem)
{
	char	   *schemaname;
	char	   *relname;
	Oid			relid;
	Relation	rel;

	/* the check hook already refused malformed values */
	if (!processor_split_table_name(guc_value, &schemaname, &relname))
	{
		*problem = psprintf("invalid table name \"%s\"", guc_value);
		return false;
	}

	relid = create_if_missing(schemaname, relname, ddl, problem);
	if (!OidIsValid(relid))
		return false;

	rel = table_open(relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		*problem = psprintf("\"%s.%s\" is not a table", schemaname, relname);
	else
	{
		*problem = check_columns(rel, columns);
		if (*problem == NULL)
			*problem = check_unique_key(rel, key_a, key_b);
	}
	table_close(rel, NoLock);

	return *problem == NULL;
}

/*
 * tables_ensure
 *		Create what is missing and validate both tables.
 *
 * Caller: inside a transaction, SPI connected, snapshot pushed.
 */
bool
tables_ensure(char **problem)
{
	*problem = NULL;

	if (!ensure_table(processor_target_table, target_ddl, target_columns,
					  "device_id", "ts", problem))
		return false;
	return ensure_table(processor_dead_letter_table, dead_letter_ddl,
						dead_letter_columns, "stream", "stream_id", problem);
}
