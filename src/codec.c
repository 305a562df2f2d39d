/*-------------------------------------------------------------------------
 *
 * codec.c
 *	  Stream entry -> Position: the wire contract of SPEC §1.  The text
 *	  the codec hands out (echoes, escaping, dead-letter fields) is
 *	  codec_text.c's.
 *
 * An entry with a "payload" field is JSON (codec_json.c parses it once,
 * building the attributes jsonb as it goes; the other fields are ignored).
 * Without one but with a "device_id" field it is flat: every field is text,
 * read by the same rules, and an empty value means absent.  Both encodings
 * end up as a CodecDocument whose values are checked here, in table order:
 * the first failing rule is the one reported.
 *
 * Nothing here raises an ERROR for bad input: UTF-8 is checked with
 * pg_encoding_verifymbstr, codec_json.c keeps the JSON parser away from
 * its ERRORs, and the server routines behind codec_build.h (float8in,
 * PostgreSQL's datetime parser, jsonb) are called only with what the rules
 * here accepted, through their non-throwing forms.  Only running out of
 * memory can throw.  Callers own the memory context: everything returned
 * is palloc'd in the current one.  This file and codec_json.c use nothing
 * from the server but codec_build.h, so that they also build standalone
 * (FRONTEND, with libpgcommon) for test/fuzz/standalone.c.
 *
 * Message catalogue (lower case; <v> is the value as it appeared on the
 * wire -- JSON text, strings with their quotes -- escaped like dead-letter
 * values and cut to PROCESSOR_ERROR_ECHO_MAX bytes on a character boundary,
 * followed by "..." when cut):
 *
 *	entry level, before any field rule:
 *	  entry no longer in stream
 *	  entry too large: <n> bytes (max <m>)
 *	  entry has neither a payload field nor a device_id field
 *	  payload is not valid UTF-8
 *	  invalid JSON: <json_errdetail text, trailing period dropped>
 *	  payload is not a JSON object
 *	  payload nested too deeply (max 256)
 *	  attributes nested too deeply (max 64)  (beyond level 256: parse stops)
 *	  duplicate key: <key>        (any top-level key, or field name when
 *	                               flat; two "payload" fields too)
 *	field rules, in table order:
 *	  missing key: <key>          (absent, JSON null, or empty flat value)
 *	  device_id is not a string: <v>
 *	  device_id is empty          (JSON "")
 *	  device_id too long: <n> bytes (max 64)
 *	  device_id contains a control character
 *	  device_id is not valid UTF-8
 *	  invalid ts: <v>
 *	  ts has no time zone: <v>
 *	  ts out of range: <v>
 *	  <key> is not a number: <v>
 *	  <key> out of range: <v>
 *	  <key> is not an integer: <v>   (satellites, priority)
 *	  attributes is not an object: <v>
 *	  attributes is not valid UTF-8          (flat)
 *	  invalid JSON in attributes: <detail>   (flat)
 *	  attributes nested too deeply (max 64)
 *	  attributes number out of range: <v>
 *	  attributes too large
 *
 * Value rules: numbers are JSON numbers (flat: text that is a valid JSON
 * number), read with float8in; an integer has no fractional part (11.0 is
 * 11).  ts is ISO-8601 "YYYY-MM-DD(T|t| )hh:mm[:ss[.f]]" followed by Z or
 * +-hh[[:]mm], or integer epoch milliseconds (a JSON number; flat: text
 * that is a JSON number).  A flat "attributes" holding the text null is
 * absent, like a JSON null.
 *
 *-------------------------------------------------------------------------
 */
#include "codec_internal.h"

#include <math.h>

#include "codec_build.h"
#include "common/int.h"
#include "common/jsonapi.h"
#include "lib/stringinfo.h"

const char *const codec_key_names[CODEC_NKEYS] = {
	"device_id", "ts", "lat", "lon", "altitude", "speed", "heading",
	"satellites", "priority", "attributes"
};

/* One name for codec_find_duplicate's sort. */
typedef struct NameRef
{
	const char *name;
	int			len;
	int			index;
} NameRef;

static bool reject(char **error, const char *fmt,...) pg_attribute_printf(2, 3);
static bool decode_flat(const StreamEntry *entry, Position *pos, char **error);
static bool decode_fields(const CodecDocument *doc, Position *pos,
						  char **error);

/*
 * Set *error to a formatted, palloc'd message and return false, so that a
 * rule can end with "return reject(error, ...)".
 */
static bool
reject(char **error, const char *fmt,...)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	*error = buf.data;
	return false;
}

/* The CodecKey of a field name (bytes, may hold NULs), or -1. */
int
codec_key_lookup(const char *name, int len)
{
	int			i;

	for (i = 0; i < CODEC_NKEYS; i++)
	{
		if (strlen(codec_key_names[i]) == (size_t) len &&
			memcmp(codec_key_names[i], name, len) == 0)
			return i;
	}
	return -1;
}

static int
nameref_cmp(const void *a, const void *b)
{
	const NameRef *x = (const NameRef *) a;
	const NameRef *y = (const NameRef *) b;
	int			c = memcmp(x->name, y->name, Min(x->len, y->len));

	if (c != 0)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return x->index < y->index ? -1 : 1;
}

/* Below this many names, comparing every pair beats sorting. */
#define CODEC_DUP_PAIRWISE_MAX	16

/*
 * Among n names (bytes with lengths), find the first one, in their order,
 * that repeats an earlier name.  Returns its index, or -1 when all are
 * distinct.  A usual entry (ten-odd keys) compares pairs, without
 * allocating; more names are sorted, O(n log n), so a payload with many
 * keys stays cheap.
 */
int
codec_find_duplicate(char **names, const int *lens, int n)
{
	NameRef    *refs;
	int			i;
	int			j;
	int			first = -1;

	if (n < 2)
		return -1;
	if (n <= CODEC_DUP_PAIRWISE_MAX)
	{
		for (i = 1; i < n; i++)
			for (j = 0; j < i; j++)
				if (lens[i] == lens[j] &&
					memcmp(names[i], names[j], lens[i]) == 0)
					return i;
		return -1;
	}
	refs = palloc(sizeof(NameRef) * n);
	for (i = 0; i < n; i++)
	{
		refs[i].name = names[i];
		refs[i].len = lens[i];
		refs[i].index = i;
	}
	qsort(refs, n, sizeof(NameRef), nameref_cmp);
	for (i = 1; i < n; i++)
	{
		if (refs[i].len == refs[i - 1].len &&
			memcmp(refs[i].name, refs[i - 1].name, refs[i].len) == 0 &&
			(first < 0 || refs[i].index < first))
			first = refs[i].index;
	}
	pfree(refs);
	return first;
}

/*
 * Decode one stream entry, either encoding (see processor.h).  The size
 * rule comes first, before anything is looked at.
 */
bool
codec_decode_entry(const StreamEntry *entry, int max_entry_bytes,
				   Position *pos, char **error)
{
	int64		size = 0;
	int			payload = -1;
	int			device_id = -1;
	int			i;

	if (entry->nfields < 0)
		return reject(error, "entry no longer in stream");
	for (i = 0; i < entry->nfields; i++)
		size += (int64) entry->name_lens[i] + entry->value_lens[i];
	if (max_entry_bytes > 0 && size > max_entry_bytes)
		return reject(error, "entry too large: " INT64_FORMAT " bytes (max %d)",
					  size, max_entry_bytes);

	for (i = 0; i < entry->nfields; i++)
	{
		int			key = codec_key_lookup(entry->names[i],
										   entry->name_lens[i]);

		if (entry->name_lens[i] == 7 &&
			memcmp(entry->names[i], "payload", 7) == 0)
		{
			if (payload >= 0)
				return reject(error, "duplicate key: payload");
			payload = i;
		}
		else if (key == CODEC_KEY_DEVICE_ID)
			device_id = i;
	}

	if (payload >= 0)
		return codec_decode_payload(entry->values[payload],
									entry->value_lens[payload], pos, error);
	if (device_id < 0)
		return reject(error, "entry has neither a payload field "
					  "nor a device_id field");
	return decode_flat(entry, pos, error);
}

/* Decode a JSON payload alone (the "payload" field's value). */
bool
codec_decode_payload(const char *payload, int len, Position *pos,
					 char **error)
{
	CodecDocument doc;

	if (!codec_json_parse_payload(payload, len, &doc, error))
		return false;
	return decode_fields(&doc, pos, error);
}

/*
 * The flat encoding: the entry's own fields are the keys.  A repeated field
 * name is a duplicate key; an empty value is absent; unknown fields are
 * ignored.
 */
static bool
decode_flat(const StreamEntry *entry, Position *pos, char **error)
{
	CodecDocument doc;
	int			dup;
	int			i;

	memset(&doc, 0, sizeof(doc));
	dup = codec_find_duplicate(entry->names, entry->name_lens,
							   entry->nfields);
	if (dup >= 0)
		return reject(error, "duplicate key: %s",
					  codec_echo(entry->names[dup], entry->name_lens[dup]));

	for (i = 0; i < entry->nfields; i++)
	{
		int			key = codec_key_lookup(entry->names[i],
										   entry->name_lens[i]);
		CodecValue *v;

		if (key < 0 || entry->value_lens[i] == 0)
			continue;
		v = &doc.values[key];
		v->kind = CODEC_TEXT;
		v->text = v->raw = entry->values[i];
		v->len = v->rawlen = entry->value_lens[i];
	}
	return decode_fields(&doc, pos, error);
}

/* The value echoed in messages about v. */
static char *
echo_value(const CodecValue *v)
{
	return codec_echo(v->raw, v->rawlen);
}

/*
 * device_id: a string of 1..64 bytes, no control characters (U+0000 to
 * U+001F, U+007F: in UTF-8 these are single bytes, so a byte scan finds
 * them), valid UTF-8.
 */
static bool
rule_device_id(const CodecValue *v, Position *pos, char **error)
{
	int			i;

	if (v->kind == CODEC_ABSENT)
		return reject(error, "missing key: device_id");
	if (v->kind != CODEC_STRING && v->kind != CODEC_TEXT)
		return reject(error, "device_id is not a string: %s", echo_value(v));
	if (v->len == 0)
		return reject(error, "device_id is empty");
	if (v->len > PROCESSOR_DEVICE_ID_MAX)
		return reject(error, "device_id too long: %d bytes (max %d)",
					  v->len, PROCESSOR_DEVICE_ID_MAX);
	for (i = 0; i < v->len; i++)
	{
		unsigned char c = (unsigned char) v->text[i];

		if (c < 0x20 || c == 0x7f)
			return reject(error, "device_id contains a control character");
	}
	if (!codec_valid_utf8(v->text, v->len))
		return reject(error, "device_id is not valid UTF-8");
	pos->device_id = pnstrdup(v->text, v->len);
	return true;
}

/*
 * Epoch milliseconds -> TimestampTz.  False when the instant is outside
 * timestamptz's range (or the arithmetic would overflow).
 */
static bool
epoch_ms_to_timestamptz(int64 ms, TimestampTz *ts)
{
	/*
	 * Shift to PostgreSQL's epoch first: the Unix microseconds of the last
	 * valid instants would not fit int64.
	 */
	const int64 shift_ms = (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) *
		SECS_PER_DAY * 1000;
	int64		pg_ms;
	int64		us;

	if (pg_sub_s64_overflow(ms, shift_ms, &pg_ms) ||
		pg_mul_s64_overflow(pg_ms, 1000, &us) ||
		!IS_VALID_TIMESTAMP(us))
		return false;
	*ts = us;
	return true;
}

/*
 * ts as integer epoch milliseconds.  v->text is a valid JSON number.
 * Plain digits are read exactly as int64; a number written with a fraction
 * or an exponent must still be integral (1.7e12 is fine, 1.5 is not).
 */
static bool
ts_from_epoch(const CodecValue *v, TimestampTz *ts, char **error)
{
	const char *digits = v->text + (v->text[0] == '-' ? 1 : 0);
	int64		ms;

	if (strspn(digits, "0123456789") == strlen(digits))
	{
		errno = 0;
		ms = strtoi64(v->text, NULL, 10);
		if (errno == ERANGE)
			return reject(error, "ts out of range: %s", echo_value(v));
	}
	else
	{
		float8		d;

		if (!codec_read_float8(v->text, &d) || !FLOAT8_FITS_IN_INT64(d))
			return reject(error, "ts out of range: %s", echo_value(v));
		if (d != rint(d))
			return reject(error, "invalid ts: %s", echo_value(v));
		ms = (int64) d;
	}
	if (!epoch_ms_to_timestamptz(ms, ts))
		return reject(error, "ts out of range: %s", echo_value(v));
	return true;
}

/* Consume exactly n ASCII digits at *p. */
static bool
take_digits(const char **p, const char *end, int n)
{
	int			i;

	for (i = 0; i < n; i++, (*p)++)
	{
		if (*p >= end || !isdigit((unsigned char) **p))
			return false;
	}
	return true;
}

/* Consume the character c at *p. */
static bool
take_char(const char **p, const char *end, char c)
{
	if (*p >= end || **p != c)
		return false;
	(*p)++;
	return true;
}

/*
 * Is s (len bytes) shaped like an ISO-8601 date-time:
 * YYYY-MM-DD, then T (or t, or a space), hh:mm[:ss[.fraction]], then an
 * optional zone: Z (or z) or +hh, +hhmm, +hh:mm (or -)?  *has_zone says
 * whether the zone is there.  Only the shape is checked: the server's
 * datetime parser (codec_read_timestamp) checks the values.  The shape
 * keeps out the many other inputs that it accepts ("now", "infinity", "Nov 26 2026", zone names).
 */
static bool
iso8601_shape(const char *s, int len, bool *has_zone)
{
	const char *p = s;
	const char *end = s + len;

	*has_zone = false;
	if (!take_digits(&p, end, 4) || !take_char(&p, end, '-') ||
		!take_digits(&p, end, 2) || !take_char(&p, end, '-') ||
		!take_digits(&p, end, 2))
		return false;
	if (p >= end || (*p != 'T' && *p != 't' && *p != ' '))
		return false;
	p++;
	if (!take_digits(&p, end, 2) || !take_char(&p, end, ':') ||
		!take_digits(&p, end, 2))
		return false;
	if (take_char(&p, end, ':'))
	{
		if (!take_digits(&p, end, 2))
			return false;
		if (take_char(&p, end, '.') && !take_digits(&p, end, 1))
			return false;
		while (p < end && isdigit((unsigned char) *p))
			p++;
	}
	if (p == end)
		return true;
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		bool		minutes;

		p++;
		if (!take_digits(&p, end, 2))
			return false;
		minutes = take_char(&p, end, ':') ||
			(p < end && isdigit((unsigned char) *p));
		if (minutes && !take_digits(&p, end, 2))
			return false;
	}
	else
		return false;
	*has_zone = true;
	return p == end;
}

/*
 * ts as an ISO-8601 string with a zone.  The zone is explicit, so the
 * session's TimeZone plays no part.
 */
static bool
ts_from_iso(const CodecValue *v, TimestampTz *ts, char **error)
{
	bool		has_zone;

	if (!iso8601_shape(v->text, v->len, &has_zone))
		return reject(error, "invalid ts: %s", echo_value(v));
	if (!has_zone)
		return reject(error, "ts has no time zone: %s", echo_value(v));
	switch (codec_read_timestamp(v->text, v->len, ts))
	{
		case CODEC_TS_OK:
			return true;
		case CODEC_TS_OUT_OF_RANGE:
			return reject(error, "ts out of range: %s", echo_value(v));
		default:
			return reject(error, "invalid ts: %s", echo_value(v));
	}
}

/* ts: an ISO-8601 string with a zone, or integer epoch milliseconds. */
static bool
rule_ts(const CodecValue *v, TimestampTz *ts, char **error)
{
	switch (v->kind)
	{
		case CODEC_ABSENT:
			return reject(error, "missing key: ts");
		case CODEC_NUMBER:
			return ts_from_epoch(v, ts, error);
		case CODEC_STRING:
			return ts_from_iso(v, ts, error);
		case CODEC_TEXT:
			if (IsValidJsonNumber(v->text, v->len))
				return ts_from_epoch(v, ts, error);
			return ts_from_iso(v, ts, error);
		default:
			return reject(error, "invalid ts: %s", echo_value(v));
	}
}

/*
 * Read a present number: a JSON number token, or flat text that is a valid
 * JSON number (so no NaN, Infinity, hex or blanks), through float8in.  The
 * grammar leaves only overflow and underflow (1e999, 1e-999) for float8in
 * to refuse.
 */
static bool
read_number(const CodecValue *v, CodecKey key, float8 *result, char **error)
{
	if (v->kind != CODEC_NUMBER &&
		!(v->kind == CODEC_TEXT && IsValidJsonNumber(v->text, v->len)))
		return reject(error, "%s is not a number: %s",
					  codec_key_names[key], echo_value(v));
	if (!codec_read_float8(v->text, result) || isinf(*result) ||
		isnan(*result))
		return reject(error, "%s out of range: %s",
					  codec_key_names[key], echo_value(v));
	return true;
}

/*
 * A float key: finite, within [min, max].  *present is false for an
 * absent optional key; an absent required key is "missing key".
 */
static bool
rule_float(const CodecDocument *doc, CodecKey key, bool required,
		   float8 min, float8 max, float8 *result, bool *present,
		   char **error)
{
	const CodecValue *v = &doc->values[key];

	*present = false;
	if (v->kind == CODEC_ABSENT)
	{
		if (required)
			return reject(error, "missing key: %s", codec_key_names[key]);
		return true;
	}
	if (!read_number(v, key, result, error))
		return false;
	if (*result < min || *result > max)
		return reject(error, "%s out of range: %s",
					  codec_key_names[key], echo_value(v));
	*present = true;
	return true;
}

/* An optional integer key (no fractional part) within [min, max]. */
static bool
rule_int(const CodecDocument *doc, CodecKey key, int min, int max,
		 int32 *result, bool *present, char **error)
{
	const CodecValue *v = &doc->values[key];
	float8		d;

	*present = false;
	if (v->kind == CODEC_ABSENT)
		return true;
	if (!read_number(v, key, &d, error))
		return false;
	if (d != rint(d))
		return reject(error, "%s is not an integer: %s",
					  codec_key_names[key], echo_value(v));
	if (d < min || d > max)
		return reject(error, "%s out of range: %s",
					  codec_key_names[key], echo_value(v));
	*result = (int32) d;
	*present = true;
	return true;
}

/*
 * attributes: a JSON object (already built by the payload's parse), or
 * flat text holding one (parsed now), or absent ('{}').
 */
static bool
rule_attributes(const CodecDocument *doc, Position *pos, char **error)
{
	const CodecValue *v = &doc->values[CODEC_KEY_ATTRIBUTES];

	switch (v->kind)
	{
		case CODEC_ABSENT:
			pos->attributes = codec_build_empty_object();
			return true;
		case CODEC_OBJECT:
			if (doc->attributes_error != NULL)
				return reject(error, "%s", doc->attributes_error);
			pos->attributes = doc->attributes;
			return true;
		case CODEC_TEXT:
			if (!codec_json_parse_attributes(v->text, v->len,
											 &pos->attributes, error))
				return false;
			if (pos->attributes == NULL)
				pos->attributes = codec_build_empty_object();
			return true;
		default:
			return reject(error, "attributes is not an object: %s",
						  echo_value(v));
	}
}

/*
 * Apply the rules of SPEC §1's table, in its order, to a document of
 * either encoding.  Fills *pos on success.
 */
static bool
decode_fields(const CodecDocument *doc, Position *pos, char **error)
{
	const float8 inf = INFINITY;
	bool		required;		/* lat and lon are always present */

	memset(pos, 0, sizeof(Position));
	return rule_device_id(&doc->values[CODEC_KEY_DEVICE_ID], pos, error) &&
		rule_ts(&doc->values[CODEC_KEY_TS], &pos->ts, error) &&
		rule_float(doc, CODEC_KEY_LAT, true, -90.0, 90.0,
				   &pos->lat, &required, error) &&
		rule_float(doc, CODEC_KEY_LON, true, -180.0, 180.0,
				   &pos->lon, &required, error) &&
		rule_float(doc, CODEC_KEY_ALTITUDE, false, -inf, inf,
				   &pos->altitude, &pos->has_altitude, error) &&
		rule_float(doc, CODEC_KEY_SPEED, false, 0.0, inf,
				   &pos->speed, &pos->has_speed, error) &&
		rule_float(doc, CODEC_KEY_HEADING, false, 0.0, 360.0,
				   &pos->heading, &pos->has_heading, error) &&
		rule_int(doc, CODEC_KEY_SATELLITES, 0, 255,
				 &pos->satellites, &pos->has_satellites, error) &&
		rule_int(doc, CODEC_KEY_PRIORITY, 0, 255,
				 &pos->priority, &pos->has_priority, error) &&
		rule_attributes(doc, pos, error);
}
