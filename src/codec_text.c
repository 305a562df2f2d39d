/*-------------------------------------------------------------------------
 *
 * codec_text.c
 *	  The text the codec hands out about an entry: values echoed in error
 *	  messages, names and values escaped as valid UTF-8, and an invalid
 *	  entry's fields rendered for the dead-letter table (SPEC §2).
 *
 * Whatever bytes a producer sent, what comes out of here is valid UTF-8
 * without NUL bytes, cut on a character boundary, so that it can go into a
 * message, a log line or a jsonb string without an ERROR.  Like codec.c,
 * this uses nothing from the server but codec_build.h, so that it also
 * builds standalone (FRONTEND) for test/fuzz/standalone.c.
 *
 *-------------------------------------------------------------------------
 */
#include "codec_internal.h"

#include "codec_build.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"

/*
 * How many bytes of s (len bytes of valid UTF-8) fit in limit without
 * cutting a character: pg_encoding_mbcliplen's answer for UTF-8, which the
 * server alone provides.
 */
int
codec_utf8_clip(const char *s, int len, int limit)
{
	int			clip = 0;

	while (clip < len)
	{
		int			l = pg_utf_mblen((const unsigned char *) s + clip);

		if (clip + l > limit || clip + l > len)
			break;
		clip += l;
	}
	return clip;
}

/* Is s (len bytes) valid UTF-8 without NUL bytes? */
bool
codec_valid_utf8(const char *s, int len)
{
	return pg_encoding_verifymbstr(PG_UTF8, s, len) == len;
}

/*
 * Copy bytes as valid UTF-8 text: NUL bytes and bytes that are not part of
 * a valid UTF-8 character become the four characters \xNN; the result is
 * then cut to at most limit bytes on a character boundary (pg_mbcliplen's
 * rule, for UTF-8).  Only as much input is read as the cut can keep.
 * Returns the palloc'd, NUL-terminated text, its length in *outlen, and in
 * *cut whether anything was left out.  Never raises an ERROR.
 */
char *
codec_escape(const char *value, int len, int limit, int *outlen, bool *cut)
{
	const unsigned char *s = (const unsigned char *) value;
	StringInfoData buf;
	int			i = 0;
	int			clip;

	initStringInfo(&buf);
	/* 4 bytes beyond the limit: the widest character or escape */
	while (i < len && buf.len < limit + 4)
	{
		int			l = 0;

		if (s[i] != '\0' && !IS_HIGHBIT_SET(s[i]))
			l = 1;
		else if (s[i] != '\0')
		{
			l = pg_utf_mblen(s + i);
			if (l > len - i || !pg_utf8_islegal(s + i, l))
				l = 0;
		}
		if (l == 0)
		{
			appendStringInfo(&buf, "\\x%02x", s[i]);
			i++;
		}
		else
		{
			appendBinaryStringInfo(&buf, (const char *) s + i, l);
			i += l;
		}
	}
	clip = codec_utf8_clip(buf.data, buf.len, limit);
	*cut = (clip < buf.len || i < len);
	buf.data[clip] = '\0';
	*outlen = clip;
	return buf.data;
}

/* A value as echoed in a message: escaped, at most 64 bytes, "..." if cut. */
char *
codec_echo(const char *value, int len)
{
	int			outlen;
	bool		cut;
	char	   *text = codec_escape(value, len, PROCESSOR_ERROR_ECHO_MAX,
									&outlen, &cut);

	return cut ? psprintf("%s...", text) : text;
}

/*
 * Bytes a string takes in jsonb's text output, quotes included: '"' and
 * '\\' and the short escapes take two, other control characters six
 * (\u00XX).
 */
static int64
json_text_len(const char *s, int len)
{
	int64		n = 2;
	int			i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' ||
			c == '\r' || c == '\t')
			n += 2;
		else if (c < 0x20)
			n += 6;
		else
			n += 1;
	}
	return n;
}

/*
 * Render an entry's fields for the dead-letter table (SPEC §2): a jsonb
 * object of name -> value, in entry order.  Names and values are escaped
 * by codec_escape (NUL and invalid UTF-8 bytes as \xNN) and cut to
 * PROCESSOR_DL_VALUE_MAX bytes each on a character boundary.  The object is
 * capped at PROCESSOR_DL_FIELDS_MAX bytes of its text form (what
 * fields::text shows): the first field that would pass the cap, and every
 * field after it, are left out.
 * A repeated name keeps its last value (jsonb's rule).  NULL for an entry
 * without fields.  The escaped strings are valid UTF-8 without NULs, far
 * below jsonb's size limits, so nothing here can raise an ERROR.
 */
Jsonb *
codec_dead_letter_fields(const StreamEntry *entry)
{
	CodecBuilder *b;
	int64		total = 2;		/* the braces */
	int			i;

	if (entry->nfields < 0)
		return NULL;
	b = codec_build_begin();
	codec_build_open(b, false);
	for (i = 0; i < entry->nfields; i++)
	{
		char	   *name;
		char	   *value;
		int			name_len;
		int			value_len;
		bool		cut;

		name = codec_escape(entry->names[i], entry->name_lens[i],
							PROCESSOR_DL_VALUE_MAX, &name_len, &cut);
		value = codec_escape(entry->values[i], entry->value_lens[i],
							 PROCESSOR_DL_VALUE_MAX, &value_len, &cut);
		/* "name": "value", with the separators */
		total += json_text_len(name, name_len) +
			json_text_len(value, value_len) + 4;
		if (total > PROCESSOR_DL_FIELDS_MAX)
			break;
		codec_build_key(b, name, name_len);
		codec_build_string(b, value, value_len);
	}
	codec_build_close(b, false);
	return codec_build_finish(b);
}
