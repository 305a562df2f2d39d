/*-------------------------------------------------------------------------
 *
 * funcs.c
 *	  The SQL-callable functions of the processor extension (SPEC §6).
 *
 * This file owns the SQL-callable functions of the extension: decoding
 * (processor.decode) here, and others as they are added; the views on
 * shared memory -- devices, stats -- live in funcs_monitor.c, and
 * processor.replay_dead_letters() in replay.c (which reads dead letters
 * with funcs_entry_from_jsonb from here).  C symbols carry the SQL interface version they
 * implement (processor_decode_payload_1_0), so that a newer library keeps
 * serving an older installed script until ALTER EXTENSION processor
 * UPDATE.
 *
 * processor.decode works whether or not the library is preloaded: it uses
 * no shared memory, only the codec and the processor.max_entry_bytes GUC
 * (defined by _PG_init, which runs when the library is loaded for the
 * call).  Functions that need the shared state must say "processor must be
 * loaded via shared_preload_libraries" (SQLSTATE 55000) when it is absent.
 *
 *-------------------------------------------------------------------------
 */
#include "processor.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

/* Columns of processor.decode's result, in order. */
#define DECODE_NCOLUMNS 10

PG_FUNCTION_INFO_V1(processor_decode_payload_1_0);
PG_FUNCTION_INFO_V1(processor_decode_fields_1_0);

/*
 * The wire contract is UTF-8 and the codec produces UTF-8 text; in a
 * database of another encoding its results would be wrong, so refuse, as
 * the worker does.
 */
static void
require_utf8_database(void)
{
	if (GetDatabaseEncoding() != PG_UTF8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("processor requires a database with UTF8 encoding"),
				 errdetail("The current database uses encoding \"%s\".",
						   GetDatabaseEncodingName())));
}

/*
 * Decode entry with the limits the worker uses, and return the position as
 * processor.decode's composite result; an invalid entry is an ERROR whose
 * message is exactly the codec's catalogue message.
 */
static Datum
decode_entry_as_row(FunctionCallInfo fcinfo, const StreamEntry *entry)
{
	Position	pos;
	char	   *error = NULL;
	TupleDesc	tupdesc;
	Datum		values[DECODE_NCOLUMNS];
	bool		nulls[DECODE_NCOLUMNS];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	if (!codec_decode_entry(entry, processor_max_entry_bytes, &pos, &error))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", error)));

	memset(nulls, 0, sizeof(nulls));
	values[0] = CStringGetTextDatum(pos.device_id);
	values[1] = TimestampTzGetDatum(pos.ts);
	values[2] = Float8GetDatum(pos.lat);
	values[3] = Float8GetDatum(pos.lon);
	values[4] = Float8GetDatum(pos.altitude);
	nulls[4] = !pos.has_altitude;
	values[5] = Float8GetDatum(pos.speed);
	nulls[5] = !pos.has_speed;
	values[6] = Float8GetDatum(pos.heading);
	nulls[6] = !pos.has_heading;
	values[7] = Int32GetDatum(pos.satellites);
	nulls[7] = !pos.has_satellites;
	values[8] = Int32GetDatum(pos.priority);
	nulls[8] = !pos.has_priority;
	values[9] = JsonbPGetDatum(pos.attributes);

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * processor.decode(payload text): decode a JSON payload as the worker
 * would decode an entry whose only field is payload.
 */
Datum
processor_decode_payload_1_0(PG_FUNCTION_ARGS)
{
	text	   *payload = PG_GETARG_TEXT_PP(0);
	StreamEntry entry;
	char	   *name = "payload";
	int			name_len = strlen(name);
	char	   *value = text_to_cstring(payload);
	int			value_len = VARSIZE_ANY_EXHDR(payload);

	require_utf8_database();
	memset(&entry, 0, sizeof(entry));
	entry.id = "";
	entry.nfields = 1;
	entry.names = &name;
	entry.name_lens = &name_len;
	entry.values = &value;
	entry.value_lens = &value_len;
	return decode_entry_as_row(fcinfo, &entry);
}

/*
 * The text a stream field would hold for a jsonb value: a string as is,
 * null as the empty string (absent, in the flat encoding), anything else
 * as its JSON text (so {"attributes": {...}} or {"lat": 52.1} work too).
 */
static char *
jsonb_value_as_field(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNull:
			return pstrdup("");
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
								NumericGetDatum(v->val.numeric)));
		case jbvBinary:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		default:
			elog(ERROR, "unexpected jsonb value type: %d", (int) v->type);
	}
	return NULL;				/* keep compiler quiet */
}

/*
 * funcs_entry_from_jsonb
 *		Fill *entry from an object of field -> value, as processor.decode(jsonb)
 *		and processor.replay_dead_letters() read one (the dead-letter table's
 *		fields column has that shape).
 *
 * The id is set to "".  Names and values are palloc'd in the current memory
 * context.  Anything but an object gives an entry without fields, which the
 * codec finds invalid.
 */
void
funcs_entry_from_jsonb(Jsonb *fields, StreamEntry *entry)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken r;
	int			n;

	memset(entry, 0, sizeof(*entry));
	entry->id = "";
	n = JB_ROOT_IS_OBJECT(fields) ? JB_ROOT_COUNT(fields) : 0;
	entry->names = palloc(sizeof(char *) * Max(n, 1));
	entry->name_lens = palloc(sizeof(int) * Max(n, 1));
	entry->values = palloc(sizeof(char *) * Max(n, 1));
	entry->value_lens = palloc(sizeof(int) * Max(n, 1));
	if (n == 0)
		return;

	it = JsonbIteratorInit(&fields->root);
	while ((r = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		int			i = entry->nfields;

		if (r == WJB_KEY)
		{
			entry->names[i] = pnstrdup(v.val.string.val, v.val.string.len);
			entry->name_lens[i] = v.val.string.len;
		}
		else if (r == WJB_VALUE)
		{
			entry->values[i] = jsonb_value_as_field(&v);
			entry->value_lens[i] = strlen(entry->values[i]);
			entry->nfields++;
		}
	}
}

/*
 * processor.decode(fields jsonb): decode an entry given as an object of
 * field -> value (either encoding: {"payload": "..."} or the flat fields).
 */
Datum
processor_decode_fields_1_0(PG_FUNCTION_ARGS)
{
	Jsonb	   *fields = PG_GETARG_JSONB_P(0);
	StreamEntry entry;

	require_utf8_database();
	if (!JB_ROOT_IS_OBJECT(fields))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("processor.decode(jsonb) expects a JSON object"),
				 errdetail("The object's keys are the entry's field names and its values their values.")));

	funcs_entry_from_jsonb(fields, &entry);
	return decode_entry_as_row(fcinfo, &entry);
}
