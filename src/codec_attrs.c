/*-------------------------------------------------------------------------
 *
 * codec_attrs.c
 *	  The attributes object, built while codec_json.c's parse goes: every
 *	  key and value handed to a CodecBuilder (codec_build.h), with the
 *	  rules that apply inside attributes.
 *
 * Rules kept here:
 *	- Nesting: the attributes object is level 1; a container below level
 *	  PROCESSOR_ATTR_MAX_DEPTH (64) makes attributes invalid and building
 *	  stops (the parse goes on, so that the rules before attributes are
 *	  still reported first).
 *	- Buffer: an object whose keys are exactly "type", with the string
 *	  "Buffer", and "data", with an array of integers 0..255 written as
 *	  plain digits, is replaced in its parent by the standard base64 string
 *	  of those bytes, at any depth (in objects and arrays).  The attributes
 *	  object itself is never replaced.
 *	- Numbers become exact jsonb numerics; one that numeric cannot hold
 *	  (1e999999) is refused before numeric_in could throw.
 *	- Size: the estimated jsonb size is capped (CODEC_ATTR_MAX_SIZE), so
 *	  that a huge max_entry_bytes cannot reach jsonb's own size ERRORs.
 *	- A duplicate key keeps its last value (jsonb's rule).
 *
 * Nothing here raises an ERROR for any input (only out of memory).
 *
 *-------------------------------------------------------------------------
 */
#include "codec_internal.h"

#include "common/base64.h"
#include "lib/stringinfo.h"

/* Cap on the estimated size of an attributes jsonb (jsonb's limit: 256 MB). */
#define CODEC_ATTR_MAX_SIZE		(64 * 1024 * 1024)

/*
 * What numeric_in accepts without "value overflows numeric format":
 * weight up to 32767 base-10000 digits (131072 decimal digits before the
 * point) and a display scale up to 16383.  Kept a little inside.
 */
#define NUMERIC_SAFE_INT_DIGITS	131000
#define NUMERIC_SAFE_SCALE		16383

/* Which key of a Buffer candidate the next value belongs to. */
typedef enum BufferKey
{
	BUF_KEY_OTHER = 0,
	BUF_KEY_TYPE,
	BUF_KEY_DATA
} BufferKey;

/* One open container inside attributes. */
typedef struct AttrFrame
{
	bool		is_array;
	bool		candidate;		/* object: may still be a Buffer */
	int			nkeys;			/* object: keys so far */
	BufferKey	key;			/* object: the key being read */
	bool		type_ok;		/* object: "type" was "Buffer" */
	bool		data_ok;		/* object: "data" was an array of bytes */
	bool		collecting;		/* array: a candidate's "data", all bytes */
	StringInfo	bytes;			/* array: bytes so far; object: the data */
} AttrFrame;

/* Attributes are invalid: remember the first reason, stop building. */
static void
attrs_fail(CodecAttrs *a, char *error)
{
	if (a->error == NULL)
		a->error = error;
	a->building = false;
}

/* Count n more bytes of estimated jsonb size. */
static void
attrs_grow(CodecAttrs *a, int64 n)
{
	a->size += n;
	if (a->size > CODEC_ATTR_MAX_SIZE)
		attrs_fail(a, pstrdup("attributes too large"));
}

/* The open container at this document depth, and its attributes level. */
static AttrFrame *
attrs_frame(CodecAttrs *a, int depth, int *level)
{
	*level = depth - a->base + 1;
	return &a->frames[*level];
}

/*
 * The array at level stops being a Buffer's "data": neither it nor the
 * object holding it can be a Buffer any more.
 */
static void
buffer_drop_data(CodecAttrs *a, int level)
{
	a->frames[level].collecting = false;
	a->frames[level - 1].candidate = false;
}

/*
 * A container opens as a value of the container at parent_level: update
 * the parent's Buffer tracking.  Returns whether the new container is a
 * Buffer candidate's "data" array.
 */
static bool
buffer_child(CodecAttrs *a, int parent_level, bool is_array)
{
	AttrFrame  *parent = &a->frames[parent_level];

	if (parent->is_array)
	{
		if (parent->collecting)
			buffer_drop_data(a, parent_level);
		return false;
	}
	if (parent->candidate && parent->key == BUF_KEY_DATA && is_array)
		return true;
	parent->candidate = false;
	return false;
}

/*
 * An object just closed was a Buffer: replace it, as the last value or
 * element of the (now current) parent container, by its base64 string.
 */
static void
buffer_replace(CodecAttrs *a, AttrFrame *frame)
{
	const char *src = frame->bytes ? frame->bytes->data : "";
	int			srclen = frame->bytes ? frame->bytes->len : 0;
	int			dstlen = pg_b64_enc_len(srclen);
	char	   *dst = palloc(dstlen + 1);
	int			n = pg_b64_encode(src, srclen, dst, dstlen);

	if (n < 0)
		return;
	dst[n] = '\0';
	codec_build_replace_last(a->jb, dst, n);
}

/* A container opens inside attributes: push it, track Buffers and depth. */
void
codec_attrs_open(CodecAttrs *a, int depth, bool is_array)
{
	int			level;
	AttrFrame  *frame = attrs_frame(a, depth, &level);
	bool		collecting = false;

	if (level > PROCESSOR_ATTR_MAX_DEPTH)
	{
		attrs_fail(a, psprintf("attributes nested too deeply (max %d)",
								 PROCESSOR_ATTR_MAX_DEPTH));
		return;
	}
	if (level > 1)
		collecting = buffer_child(a, level - 1, is_array);
	memset(frame, 0, sizeof(AttrFrame));
	frame->is_array = is_array;
	frame->candidate = !is_array && level > 1;
	frame->collecting = collecting;
	codec_build_open(a->jb, is_array);
	attrs_grow(a, 16);
}

/* A container closes inside attributes: pop it, finish Buffer tracking. */
void
codec_attrs_close(CodecAttrs *a, int depth, bool is_array)
{
	int			level;
	AttrFrame  *frame = attrs_frame(a, depth, &level);

	codec_build_close(a->jb, is_array);
	if (level == 1)
	{
		a->done = true;
		return;
	}
	if (is_array && frame->collecting)
	{
		a->frames[level - 1].data_ok = true;
		a->frames[level - 1].bytes = frame->bytes;
	}
	else if (!is_array && frame->candidate && frame->nkeys == 2 &&
			 frame->type_ok && frame->data_ok)
		buffer_replace(a, frame);
}

/* A key inside an attributes object. */
void
codec_attrs_key(CodecAttrs *a, int depth, char *fname)
{
	int			level;
	AttrFrame  *frame = attrs_frame(a, depth, &level);
	int			len = strlen(fname);

	codec_build_key(a->jb, fname, len);
	attrs_grow(a, len + 8);

	frame->nkeys++;
	if (strcmp(fname, "type") == 0)
		frame->key = BUF_KEY_TYPE;
	else if (strcmp(fname, "data") == 0)
		frame->key = BUF_KEY_DATA;
	else
		frame->key = BUF_KEY_OTHER;
	if (frame->key == BUF_KEY_OTHER || frame->nkeys > 2)
		frame->candidate = false;
}

/*
 * Can numeric_in read this JSON number token without raising an ERROR?
 * The token passed the JSON lexer, so its grammar is known:
 * -?digits[.digits][(e|E)[+-]digits].
 */
static bool
number_fits_numeric(const char *token)
{
	const char *p = token;
	int64		intdigits = 0;
	int64		fracdigits = 0;
	int64		exponent = 0;
	bool		negative = false;

	if (*p == '-')
		p++;
	for (; isdigit((unsigned char) *p); p++)
		intdigits++;
	if (*p == '.')
		for (p++; isdigit((unsigned char) *p); p++)
			fracdigits++;
	if (*p == 'e' || *p == 'E')
	{
		p++;
		if (*p == '+' || *p == '-')
			negative = (*p++ == '-');
		for (; isdigit((unsigned char) *p); p++)
		{
			if (exponent < PG_INT32_MAX)
				exponent = exponent * 10 + (*p - '0');
		}
	}
	if (negative)
		exponent = -exponent;
	return intdigits + exponent <= NUMERIC_SAFE_INT_DIGITS &&
		fracdigits - exponent <= NUMERIC_SAFE_SCALE;
}

/* Is this JSON token a byte of a Buffer's data: plain digits, 0..255? */
static bool
token_is_byte(const char *token, JsonTokenType type, int *byte)
{
	size_t		len = strlen(token);

	if (type != JSON_TOKEN_NUMBER || len == 0 || len > 3 ||
		strspn(token, "0123456789") != len)
		return false;
	*byte = atoi(token);
	return *byte <= 255;
}

/* Buffer tracking for a scalar value in the container at level. */
static void
buffer_scalar(CodecAttrs *a, int level, char *token, JsonTokenType type)
{
	AttrFrame  *frame = &a->frames[level];
	int			byte;

	if (frame->is_array)
	{
		if (!frame->collecting)
			return;
		if (!token_is_byte(token, type, &byte))
		{
			buffer_drop_data(a, level);
			return;
		}
		if (frame->bytes == NULL)
			frame->bytes = makeStringInfo();
		appendStringInfoChar(frame->bytes, (char) byte);
	}
	else if (frame->candidate)
	{
		frame->type_ok = (frame->key == BUF_KEY_TYPE &&
						  type == JSON_TOKEN_STRING &&
						  strcmp(token, "Buffer") == 0);
		if (!frame->type_ok)
			frame->candidate = false;
	}
}

/* A scalar inside attributes: add it as a value or an element. */
void
codec_attrs_scalar(CodecAttrs *a, int depth, char *token,
				   JsonTokenType type)
{
	int64		size = 8;

	switch (type)
	{
		case JSON_TOKEN_STRING:
			size += strlen(token);
			codec_build_string(a->jb, token, strlen(token));
			break;
		case JSON_TOKEN_NUMBER:
			if (!number_fits_numeric(token))
			{
				attrs_fail(a, psprintf("attributes number out of range: %s",
										 codec_echo(token, strlen(token))));
				return;
			}
			size += codec_build_number(a->jb, token);
			break;
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			codec_build_bool(a->jb, type == JSON_TOKEN_TRUE);
			break;
		default:
			codec_build_null(a->jb);
			break;
	}
	attrs_grow(a, size);
	buffer_scalar(a, depth - a->base + 1, token, type);
}

/* The attributes object starts at this document depth. */
void
codec_attrs_begin(CodecAttrs *a, int depth)
{
	memset(a, 0, sizeof(CodecAttrs));
	a->building = true;
	a->base = depth;
	a->jb = codec_build_begin();
	a->frames = palloc0(sizeof(AttrFrame) * (PROCESSOR_ATTR_MAX_DEPTH + 1));
}
