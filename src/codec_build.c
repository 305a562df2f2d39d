/*-------------------------------------------------------------------------
 *
 * codec_build.c
 *	  The server side of codec_build.h: what the codec accepted becomes
 *	  jsonb, numeric, float8 and timestamptz through PostgreSQL's own
 *	  routines.
 *
 * The attributes object is pushed into a JsonbParseState as the parse
 * goes, so that no second parse (jsonb_in) is needed.  Every routine used
 * here is called in its non-throwing form or with input the codec has
 * already checked (a number that numeric can hold, a date-time of the
 * ISO-8601 shape), so nothing raises an ERROR but out of memory.
 *
 *-------------------------------------------------------------------------
 */
#include "codec_build.h"

#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/float.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

struct CodecBuilder
{
	JsonbParseState *state;
	JsonbValue *result;			/* the root, once closed */
};

CodecBuilder *
codec_build_begin(void)
{
	return palloc0(sizeof(CodecBuilder));
}

void
codec_build_open(CodecBuilder *b, bool is_array)
{
	pushJsonbValue(&b->state, is_array ? WJB_BEGIN_ARRAY : WJB_BEGIN_OBJECT,
				   NULL);
}

void
codec_build_close(CodecBuilder *b, bool is_array)
{
	JsonbValue *res;

	res = pushJsonbValue(&b->state, is_array ? WJB_END_ARRAY : WJB_END_OBJECT,
						 NULL);
	if (b->state == NULL)
		b->result = res;
}

/* A jsonb string pointing at s (not copied: it lives as long as the jsonb). */
static void
string_value(JsonbValue *v, const char *s, int len)
{
	v->type = jbvString;
	v->val.string.val = unconstify(char *, s);
	v->val.string.len = len;
}

void
codec_build_key(CodecBuilder *b, const char *key, int len)
{
	JsonbValue	v;

	string_value(&v, key, len);
	pushJsonbValue(&b->state, WJB_KEY, &v);
}

/* Add a scalar as the next value (object) or element (array). */
static void
push_scalar(CodecBuilder *b, JsonbValue *v)
{
	pushJsonbValue(&b->state,
				   b->state->contVal.type == jbvArray ? WJB_ELEM : WJB_VALUE,
				   v);
}

void
codec_build_string(CodecBuilder *b, const char *s, int len)
{
	JsonbValue	v;

	string_value(&v, s, len);
	push_scalar(b, &v);
}

/*
 * The numerics 0 .. SMALL_NUMERICS - 1, made once per process: the bytes
 * of every Buffer and most I/O element values are among them.  jsonb
 * copies a numeric into the document, never changes it, so one copy can
 * serve every document.
 */
#define SMALL_NUMERICS	256

static Numeric
small_numeric(int v)
{
	static Numeric cache[SMALL_NUMERICS];

	if (cache[v] == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		cache[v] = int64_to_numeric(v);
		MemoryContextSwitchTo(old);
	}
	return cache[v];
}

/*
 * Most attribute numbers are small integers (I/O element values, a
 * Buffer's bytes before it is replaced).  Plain digits that surely fit in
 * int64 (at most 18) go through int64_to_numeric, which gives the same
 * numeric as numeric_in at a fraction of its cost; anything else (a
 * fraction, an exponent, a 21-digit odometer) through numeric_in.  JSON
 * has no leading zeros or '+', so the digits are the number.
 */
static Numeric
token_to_numeric(const char *token)
{
	const char *digits = token + (token[0] == '-' ? 1 : 0);
	size_t		ndigits = strspn(digits, "0123456789");

	if (ndigits > 0 && ndigits <= 18 && digits[ndigits] == '\0')
	{
		int64		v = strtoi64(token, NULL, 10);

		if (v >= 0 && v < SMALL_NUMERICS)
			return small_numeric((int) v);
		return int64_to_numeric(v);
	}
	return DatumGetNumeric(DirectFunctionCall3(numeric_in,
											   CStringGetDatum(token),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}

int
codec_build_number(CodecBuilder *b, const char *token)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = token_to_numeric(token);
	push_scalar(b, &v);
	return VARSIZE(v.val.numeric);
}

void
codec_build_bool(CodecBuilder *b, bool value)
{
	JsonbValue	v;

	v.type = jbvBool;
	v.val.boolean = value;
	push_scalar(b, &v);
}

void
codec_build_null(CodecBuilder *b)
{
	JsonbValue	v;

	v.type = jbvNull;
	push_scalar(b, &v);
}

/*
 * The value just completed is the last element or pair of the container
 * now on top of the parse state: overwrite it in place.
 */
void
codec_build_replace_last(CodecBuilder *b, const char *s, int len)
{
	JsonbValue *parent = &b->state->contVal;
	JsonbValue *last;

	if (parent->type == jbvArray)
		last = &parent->val.array.elems[parent->val.array.nElems - 1];
	else
		last = &parent->val.object.pairs[parent->val.object.nPairs - 1].value;
	string_value(last, s, len);
}

Jsonb *
codec_build_finish(CodecBuilder *b)
{
	return b->result ? JsonbValueToJsonb(b->result) : NULL;
}

Jsonb *
codec_build_empty_object(void)
{
	static Jsonb *empty = NULL;

	if (empty == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		JsonbParseState *state = NULL;

		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		empty = JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT,
												 NULL));
		MemoryContextSwitchTo(old);
	}
	return empty;
}

bool
codec_read_float8(const char *text, float8 *result)
{
	bool		have_error = false;

	*result = float8in_internal_opt_error(unconstify(char *, text), NULL,
										  "double precision", text,
										  &have_error);
	return !have_error;
}

/*
 * Through PostgreSQL's own datetime parser, with return codes only (it
 * does not throw).  MAXDATELEN bounds what it can hold: a longer text
 * (a fraction of many digits) is invalid.
 */
CodecTimestampResult
codec_read_timestamp(const char *text, int len, TimestampTz *ts)
{
	char		str[MAXDATELEN + 1];
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	int			tz;
	fsec_t		fsec;
	struct pg_tm tt;

	if (len > MAXDATELEN)
		return CODEC_TS_INVALID;
	memcpy(str, text, len);
	str[len] = '\0';
	if (ParseDateTime(str, workbuf, sizeof(workbuf), field, ftype,
					  MAXDATEFIELDS, &nf) != 0 ||
		DecodeDateTime(field, ftype, nf, &dtype, &tt, &fsec, &tz) != 0 ||
		dtype != DTK_DATE)
		return CODEC_TS_INVALID;
	if (tm2timestamp(&tt, fsec, &tz, ts) != 0 || !IS_VALID_TIMESTAMP(*ts))
		return CODEC_TS_OUT_OF_RANGE;
	return CODEC_TS_OK;
}
