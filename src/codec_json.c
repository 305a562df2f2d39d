/*-------------------------------------------------------------------------
 *
 * codec_json.c
 *	  One pass of PostgreSQL's JSON parser over a payload, or over a flat
 *	  entry's "attributes" text.
 *
 * pg_parse_json (common/jsonapi.h) calls the semantic actions below.  They
 * record the payload's top-level values for codec.c's rules and, for the
 * "attributes" object, hand every key and value to a CodecBuilder
 * (codec_build.h: jsonb in the server) as they arrive, so that the
 * attributes jsonb comes out of the same pass (no second parse, no
 * jsonb_in).
 *
 * Rules kept here:
 *	- Nesting.  The attributes object is level 1; a container below level
 *	  PROCESSOR_ATTR_MAX_DEPTH (64) makes attributes invalid, and parsing
 *	  goes on without building, so that the rules before attributes are
 *	  still reported first.  Anywhere in the document, a container deeper
 *	  than CODEC_MAX_DEPTH (256, the payload object being level 1) stops the
 *	  parse: pg_parse_json recurses and would otherwise reach
 *	  check_stack_depth()'s ERROR.  PostgreSQL 15's actions cannot return an
 *	  error, so the stop cuts the lexer's input short at the current token;
 *	  the parser then meets the end of input, unwinds with an error code, and
 *	  the aborted flag makes every later action a no-op.
 *	- Buffer.  An object inside attributes whose keys are exactly "type",
 *	  with the string "Buffer", and "data", with an array of integers 0..255
 *	  written as plain digits, is replaced in its parent by the standard
 *	  base64 string of those bytes, at any depth (in objects and arrays).
 *	  The attributes object itself is never replaced.
 *	- Numbers inside attributes become exact jsonb numerics.  A number that
 *	  numeric cannot hold (1e999999) is refused before numeric_in could
 *	  throw.  The estimated jsonb size is capped (CODEC_ATTR_MAX_SIZE) so
 *	  that a huge max_entry_bytes cannot reach jsonb's own size ERRORs.
 *	- Every top-level key is remembered: a repeated one makes the entry
 *	  invalid.  Inside attributes, jsonb keeps the last duplicate.
 *
 * Nothing here raises an ERROR for any input (only out of memory).
 *
 *-------------------------------------------------------------------------
 */
#include "codec_internal.h"

#include "codec_build.h"
#include "common/base64.h"
#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"

/* Deepest container anywhere in a document; the top object is level 1. */
#define CODEC_MAX_DEPTH			256

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

/* The semantic actions' state for one parse. */
typedef struct JsonDoc
{
	JsonLexContext *lex;
	bool		attributes_only;	/* the document is a flat attributes text */
	int			depth;			/* containers open around the current token */
	bool		aborted;		/* parse stopped; see abort_error */
	char	   *abort_error;
	bool		not_object;		/* the top level is a scalar */
	bool		top_null;		/* the top level is null (attributes only) */

	/* top-level fields of a payload */
	int			key;			/* CodecKey of the current field, or -1 */
	char	   *value_start;	/* where its value starts in the input */
	CodecValueKind value_kind;
	char	   *value_text;
	bool		seen[CODEC_NKEYS];
	char	  **names;			/* every top-level key, for duplicates */
	int		   *name_lens;
	int			nnames;
	int			maxnames;
	CodecDocument *out;

	/* the attributes object */
	bool		attrs_started;	/* met (only its first occurrence counts) */
	bool		in_attrs;		/* the current token is inside it */
	bool		building;		/* still pushing into jb */
	int			attrs_base;		/* depth of the attributes object */
	int64		attrs_size;		/* estimated jsonb size so far */
	CodecBuilder *jb;
	bool		attrs_done;		/* the object was closed whole */
	char	   *attrs_error;
	AttrFrame	frames[PROCESSOR_ATTR_MAX_DEPTH + 1];	/* by level, from 1 */
} JsonDoc;

/*
 * Stop the parse: make the lexer see the end of input right after the
 * current token, so that pg_parse_json unwinds with an error code.
 */
static void
doc_abort(JsonDoc *doc, char *error)
{
	doc->aborted = true;
	doc->abort_error = error;
	doc->lex->input_length = doc->lex->token_start - doc->lex->input;
}

/* Attributes are invalid: remember the first reason, stop building. */
static void
attrs_fail(JsonDoc *doc, char *error)
{
	if (doc->attrs_error == NULL)
		doc->attrs_error = error;
	doc->building = false;
}

/* Count n more bytes of estimated jsonb size. */
static void
attrs_grow(JsonDoc *doc, int64 n)
{
	doc->attrs_size += n;
	if (doc->attrs_size > CODEC_ATTR_MAX_SIZE)
		attrs_fail(doc, pstrdup("attributes too large"));
}

/* The current depth as a level of attributes (the object itself is 1). */
static int
attrs_level(JsonDoc *doc)
{
	return doc->depth - doc->attrs_base + 1;
}

/* The open container at the current depth, by attributes level. */
static AttrFrame *
attrs_frame(JsonDoc *doc, int *level)
{
	*level = attrs_level(doc);
	return &doc->frames[*level];
}

/*
 * The array at level stops being a Buffer's "data": neither it nor the
 * object holding it can be a Buffer any more.
 */
static void
buffer_drop_data(JsonDoc *doc, int level)
{
	doc->frames[level].collecting = false;
	doc->frames[level - 1].candidate = false;
}

/*
 * A container opens as a value of the container at parent_level: update
 * the parent's Buffer tracking.  Returns whether the new container is a
 * Buffer candidate's "data" array.
 */
static bool
buffer_child(JsonDoc *doc, int parent_level, bool is_array)
{
	AttrFrame  *parent = &doc->frames[parent_level];

	if (parent->is_array)
	{
		if (parent->collecting)
			buffer_drop_data(doc, parent_level);
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
buffer_replace(JsonDoc *doc, AttrFrame *frame)
{
	const char *src = frame->bytes ? frame->bytes->data : "";
	int			srclen = frame->bytes ? frame->bytes->len : 0;
	int			dstlen = pg_b64_enc_len(srclen);
	char	   *dst = palloc(dstlen + 1);
	int			n = pg_b64_encode(src, srclen, dst, dstlen);

	if (n < 0)
		return;
	dst[n] = '\0';
	codec_build_replace_last(doc->jb, dst, n);
}

/* A container opens inside attributes: push it, track Buffers and depth. */
static void
attrs_open(JsonDoc *doc, bool is_array)
{
	int			level;
	AttrFrame  *frame = attrs_frame(doc, &level);
	bool		collecting = false;

	if (level > PROCESSOR_ATTR_MAX_DEPTH)
	{
		attrs_fail(doc, psprintf("attributes nested too deeply (max %d)",
								 PROCESSOR_ATTR_MAX_DEPTH));
		return;
	}
	if (level > 1)
		collecting = buffer_child(doc, level - 1, is_array);
	memset(frame, 0, sizeof(AttrFrame));
	frame->is_array = is_array;
	frame->candidate = !is_array && level > 1;
	frame->collecting = collecting;
	codec_build_open(doc->jb, is_array);
	attrs_grow(doc, 16);
}

/* A container closes inside attributes: pop it, finish Buffer tracking. */
static void
attrs_close(JsonDoc *doc, bool is_array)
{
	int			level;
	AttrFrame  *frame = attrs_frame(doc, &level);

	codec_build_close(doc->jb, is_array);
	if (level == 1)
	{
		doc->attrs_done = true;
		return;
	}
	if (is_array && frame->collecting)
	{
		doc->frames[level - 1].data_ok = true;
		doc->frames[level - 1].bytes = frame->bytes;
	}
	else if (!is_array && frame->candidate && frame->nkeys == 2 &&
			 frame->type_ok && frame->data_ok)
		buffer_replace(doc, frame);
}

/* A key inside an attributes object. */
static void
attrs_key(JsonDoc *doc, char *fname)
{
	int			level;
	AttrFrame  *frame = attrs_frame(doc, &level);
	int			len = strlen(fname);

	codec_build_key(doc->jb, fname, len);
	attrs_grow(doc, len + 8);

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
buffer_scalar(JsonDoc *doc, int level, char *token, JsonTokenType type)
{
	AttrFrame  *frame = &doc->frames[level];
	int			byte;

	if (frame->is_array)
	{
		if (!frame->collecting)
			return;
		if (!token_is_byte(token, type, &byte))
		{
			buffer_drop_data(doc, level);
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
static void
attrs_scalar(JsonDoc *doc, char *token, JsonTokenType type)
{
	int64		size = 8;

	switch (type)
	{
		case JSON_TOKEN_STRING:
			size += strlen(token);
			codec_build_string(doc->jb, token, strlen(token));
			break;
		case JSON_TOKEN_NUMBER:
			if (!number_fits_numeric(token))
			{
				attrs_fail(doc, psprintf("attributes number out of range: %s",
										 codec_echo(token, strlen(token))));
				return;
			}
			size += codec_build_number(doc->jb, token);
			break;
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			codec_build_bool(doc->jb, type == JSON_TOKEN_TRUE);
			break;
		default:
			codec_build_null(doc->jb);
			break;
	}
	attrs_grow(doc, size);
	buffer_scalar(doc, attrs_level(doc), token, type);
}

/* The attributes object starts at the current depth. */
static void
attrs_begin(JsonDoc *doc)
{
	if (doc->attrs_started)
		return;
	doc->attrs_started = doc->in_attrs = doc->building = true;
	doc->attrs_base = doc->depth;
	doc->jb = codec_build_begin();
}

/* Object or array start. */
static void
doc_container_start(JsonDoc *doc, bool is_array)
{
	if (doc->aborted)
		return;
	if (doc->depth == 0 && is_array)
	{
		doc_abort(doc, doc->attributes_only ?
				  psprintf("attributes is not an object: %s",
						   codec_echo(doc->lex->input,
									  doc->lex->input_length)) :
				  pstrdup("payload is not a JSON object"));
		return;
	}
	doc->depth++;
	if (doc->depth > CODEC_MAX_DEPTH)
	{
		doc_abort(doc, doc->in_attrs ?
				  psprintf("attributes nested too deeply (max %d)",
						   PROCESSOR_ATTR_MAX_DEPTH) :
				  psprintf("payload nested too deeply (max %d)",
						   CODEC_MAX_DEPTH));
		return;
	}
	if (!doc->attributes_only && doc->depth == 2)
	{
		doc->value_kind = is_array ? CODEC_ARRAY : CODEC_OBJECT;
		if (!is_array && doc->key == CODEC_KEY_ATTRIBUTES)
			attrs_begin(doc);
	}
	else if (doc->attributes_only && doc->depth == 1)
		attrs_begin(doc);
	if (doc->building)
		attrs_open(doc, is_array);
}

/* Object or array end. */
static void
doc_container_end(JsonDoc *doc, bool is_array)
{
	if (doc->aborted)
		return;
	if (doc->building)
		attrs_close(doc, is_array);
	if (doc->in_attrs && doc->depth == doc->attrs_base)
		doc->in_attrs = doc->building = false;
	doc->depth--;
}

static void
doc_object_start(void *state)
{
	doc_container_start((JsonDoc *) state, false);
}

static void
doc_object_end(void *state)
{
	doc_container_end((JsonDoc *) state, false);
}

static void
doc_array_start(void *state)
{
	doc_container_start((JsonDoc *) state, true);
}

static void
doc_array_end(void *state)
{
	doc_container_end((JsonDoc *) state, true);
}

/* A top-level key of the payload: remember it and where its value starts. */
static void
doc_field_start(void *state, char *fname, bool isnull)
{
	JsonDoc    *doc = (JsonDoc *) state;

	if (doc->aborted)
		return;
	if (doc->attributes_only || doc->depth != 1)
	{
		if (doc->building)
			attrs_key(doc, fname);
		return;
	}
	if (doc->nnames == doc->maxnames)
	{
		doc->maxnames = Max(16, doc->maxnames * 2);
		doc->names = doc->names ?
			repalloc(doc->names, sizeof(char *) * doc->maxnames) :
			palloc(sizeof(char *) * doc->maxnames);
		doc->name_lens = doc->name_lens ?
			repalloc(doc->name_lens, sizeof(int) * doc->maxnames) :
			palloc(sizeof(int) * doc->maxnames);
	}
	doc->names[doc->nnames] = fname;
	doc->name_lens[doc->nnames] = strlen(fname);
	doc->key = codec_key_lookup(fname, doc->name_lens[doc->nnames]);
	doc->nnames++;
	doc->value_start = doc->lex->token_start;
	doc->value_kind = CODEC_ABSENT;
	doc->value_text = NULL;
}

/*
 * A top-level field of the payload ends: store the first occurrence of a
 * known key, with its raw text (from its first token to the end of its
 * last one) for messages.
 */
static void
doc_field_end(void *state, char *fname, bool isnull)
{
	JsonDoc    *doc = (JsonDoc *) state;
	CodecValue *v;

	if (doc->aborted || doc->attributes_only || doc->depth != 1)
		return;
	if (doc->key < 0 || doc->seen[doc->key])
		return;
	doc->seen[doc->key] = true;
	v = &doc->out->values[doc->key];
	v->kind = doc->value_kind;
	v->text = doc->value_text ? doc->value_text : "";
	v->len = strlen(v->text);
	v->raw = doc->value_start;
	v->rawlen = doc->lex->prev_token_terminator - doc->value_start;
}

/* A scalar anywhere. */
static void
doc_scalar(void *state, char *token, JsonTokenType tokentype)
{
	JsonDoc    *doc = (JsonDoc *) state;

	if (doc->aborted)
		return;
	if (doc->depth == 0)
	{
		if (doc->attributes_only && tokentype == JSON_TOKEN_NULL)
			doc->top_null = true;
		else
			doc->not_object = true;
	}
	else if (!doc->attributes_only && doc->depth == 1)
	{
		switch (tokentype)
		{
			case JSON_TOKEN_STRING:
				doc->value_kind = CODEC_STRING;
				break;
			case JSON_TOKEN_NUMBER:
				doc->value_kind = CODEC_NUMBER;
				break;
			case JSON_TOKEN_TRUE:
			case JSON_TOKEN_FALSE:
				doc->value_kind = CODEC_BOOL;
				break;
			default:
				doc->value_kind = CODEC_ABSENT;	/* null */
				break;
		}
		doc->value_text = token;
	}
	else if (doc->building)
		attrs_scalar(doc, token, tokentype);
}

/*
 * json_errdetail's text for a parse error, with the offending token cut to
 * PROCESSOR_ERROR_ECHO_MAX bytes first (it is echoed whole otherwise) and
 * the trailing period dropped, as for any errmsg.
 */
static char *
json_error_text(JsonParseErrorType result, JsonLexContext *lex)
{
	char	   *detail;
	size_t		len;

	if (lex->token_start != NULL && lex->token_terminator > lex->token_start)
	{
		int			toklen = lex->token_terminator - lex->token_start;

		lex->token_terminator = lex->token_start +
			codec_utf8_clip(lex->token_start, toklen,
							PROCESSOR_ERROR_ECHO_MAX);
	}
	/* some details are string constants: copy rather than modify */
	detail = json_errdetail(result, lex);
	len = strlen(detail);
	if (len > 0 && detail[len - 1] == '.')
		len--;
	return pnstrdup(detail, len);
}

/*
 * Run the parser over json (len bytes, valid UTF-8) with doc's actions.
 * The input is not modified (the lexer only reads it).
 */
static JsonParseErrorType
doc_parse(JsonDoc *doc, const char *json, int len)
{
	JsonSemAction sem;

	doc->key = -1;
	doc->lex = makeJsonLexContextCstringLen(unconstify(char *, json), len,
											PG_UTF8, true);
	memset(&sem, 0, sizeof(sem));
	sem.semstate = doc;
	sem.object_start = doc_object_start;
	sem.object_end = doc_object_end;
	sem.array_start = doc_array_start;
	sem.array_end = doc_array_end;
	sem.object_field_start = doc_field_start;
	sem.object_field_end = doc_field_end;
	sem.scalar = doc_scalar;
	return pg_parse_json(doc->lex, &sem);
}

/*
 * Parse a JSON payload into *out: its known top-level values, and the
 * attributes jsonb when attributes is an object (or why it is refused).
 * Returns false with *error for an entry-level failure: invalid UTF-8,
 * invalid JSON, not an object, nested too deeply, a duplicate key.
 */
bool
codec_json_parse_payload(const char *json, int len, CodecDocument *out,
						 char **error)
{
	JsonDoc    *doc;
	JsonParseErrorType result;
	int			dup;

	memset(out, 0, sizeof(CodecDocument));
	if (!codec_valid_utf8(json, len))
	{
		*error = pstrdup("payload is not valid UTF-8");
		return false;
	}
	doc = palloc0(sizeof(JsonDoc));
	doc->out = out;
	result = doc_parse(doc, json, len);
	if (doc->aborted)
		*error = doc->abort_error;
	else if (result != JSON_SUCCESS)
		*error = psprintf("invalid JSON: %s",
						  json_error_text(result, doc->lex));
	else if (doc->not_object)
		*error = pstrdup("payload is not a JSON object");
	else if ((dup = codec_find_duplicate(doc->names, doc->name_lens,
										 doc->nnames)) >= 0)
		*error = psprintf("duplicate key: %s",
						  codec_echo(doc->names[dup], doc->name_lens[dup]));
	else
	{
		if (doc->attrs_error != NULL)
			out->attributes_error = doc->attrs_error;
		else if (doc->attrs_done)
			out->attributes = codec_build_finish(doc->jb);
		return true;
	}
	return false;
}

/*
 * Parse a flat entry's attributes text.  On success *attributes is the
 * object, or NULL for the text "null" (absent).  Returns false with *error
 * otherwise.
 */
bool
codec_json_parse_attributes(const char *json, int len, Jsonb **attributes,
							char **error)
{
	JsonDoc    *doc;
	JsonParseErrorType result;

	*attributes = NULL;
	if (!codec_valid_utf8(json, len))
	{
		*error = pstrdup("attributes is not valid UTF-8");
		return false;
	}
	doc = palloc0(sizeof(JsonDoc));
	doc->attributes_only = true;
	result = doc_parse(doc, json, len);
	if (doc->aborted)
		*error = doc->abort_error;
	else if (result != JSON_SUCCESS)
		*error = psprintf("invalid JSON in attributes: %s",
						  json_error_text(result, doc->lex));
	else if (doc->not_object)
		*error = psprintf("attributes is not an object: %s",
						  codec_echo(json, len));
	else if (doc->attrs_error != NULL)
		*error = doc->attrs_error;
	else
	{
		if (doc->attrs_done)
			*attributes = codec_build_finish(doc->jb);
		return true;
	}
	return false;
}
