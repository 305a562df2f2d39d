/*-------------------------------------------------------------------------
 *
 * codec_json.c
 *	  One pass of PostgreSQL's JSON parser over a payload, or over a flat
 *	  entry's "attributes" text.
 *
 * pg_parse_json (common/jsonapi.h) calls the semantic actions below.  They
 * record the payload's top-level values for codec.c's rules and hand what
 * is inside the "attributes" object to codec_attrs.c, which builds its
 * jsonb as the tokens arrive, so that it comes out of the same pass (no
 * second parse, no jsonb_in).
 *
 * Rules kept here:
 *	- Depth.  Anywhere in the document, a container deeper than
 *	  CODEC_MAX_DEPTH (256, the payload object being level 1) stops the
 *	  parse: pg_parse_json recurses and would otherwise reach
 *	  check_stack_depth()'s ERROR.  PostgreSQL 15's actions cannot return an
 *	  error, so the stop cuts the lexer's input short at the current token;
 *	  the parser then meets the end of input, unwinds with an error code, and
 *	  the aborted flag makes every later action a no-op.  (The tighter limit
 *	  inside attributes, 64, is codec_attrs.c's.)
 *	- Every top-level key is remembered: a repeated one makes the entry
 *	  invalid.
 *	- Only the first "attributes" key counts (a repeat is a duplicate key
 *	  anyway).
 *
 * Nothing here raises an ERROR for any input (only out of memory).
 *
 *-------------------------------------------------------------------------
 */
#include "codec_internal.h"

#include "codec_build.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

/* Deepest container anywhere in a document; the top object is level 1. */
#define CODEC_MAX_DEPTH			256

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
	CodecAttrs	attrs;			/* valid once attrs_started */
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

/* The attributes object starts at the current depth (its first one only). */
static void
attrs_begin(JsonDoc *doc)
{
	if (doc->attrs_started)
		return;
	doc->attrs_started = doc->in_attrs = true;
	codec_attrs_begin(&doc->attrs, doc->depth);
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
	if (doc->attrs.building)
		codec_attrs_open(&doc->attrs, doc->depth, is_array);
}

/* Object or array end. */
static void
doc_container_end(JsonDoc *doc, bool is_array)
{
	if (doc->aborted)
		return;
	if (doc->attrs.building)
		codec_attrs_close(&doc->attrs, doc->depth, is_array);
	if (doc->in_attrs && doc->depth == doc->attrs.base)
		doc->in_attrs = doc->attrs.building = false;
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
		if (doc->attrs.building)
			codec_attrs_key(&doc->attrs, doc->depth, fname);
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
	else if (doc->attrs.building)
		codec_attrs_scalar(&doc->attrs, doc->depth, token, tokentype);
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
		if (doc->attrs.error != NULL)
			out->attributes_error = doc->attrs.error;
		else if (doc->attrs.done)
			out->attributes = codec_build_finish(doc->attrs.jb);
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
	else if (doc->attrs.error != NULL)
		*error = doc->attrs.error;
	else
	{
		if (doc->attrs.done)
			*attributes = codec_build_finish(doc->attrs.jb);
		return true;
	}
	return false;
}
