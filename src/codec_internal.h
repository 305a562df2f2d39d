/*-------------------------------------------------------------------------
 *
 * codec_internal.h
 *	  Declarations shared by the codec's files (codec*.c) only.
 *
 * codec.c owns the entry-level rules (size, encoding choice, the field
 * rules of SPEC §1 in table order, the message catalogue); codec_text.c
 * the text handed out (echoes, escaping, dead-letter rendering);
 * codec_attrs.c the attributes object's rules and building;
 * codec_json.c owns the single pass of PostgreSQL's JSON parser
 * over a payload or a flat "attributes" text, which collects the top-level
 * values and builds the attributes jsonb as it goes (through codec_build.h).
 * Nothing here is for the other modules: they use codec.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CODEC_INTERNAL_H
#define CODEC_INTERNAL_H

#include "codec.h"
#include "codec_build.h"
#include "common/jsonapi.h"

/* The keys of SPEC §1, in table order: the order rules are checked in. */
typedef enum CodecKey
{
	CODEC_KEY_DEVICE_ID = 0,
	CODEC_KEY_TS,
	CODEC_KEY_LAT,
	CODEC_KEY_LON,
	CODEC_KEY_ALTITUDE,
	CODEC_KEY_SPEED,
	CODEC_KEY_HEADING,
	CODEC_KEY_SATELLITES,
	CODEC_KEY_PRIORITY,
	CODEC_KEY_ATTRIBUTES,
	CODEC_NKEYS
} CodecKey;

/* What a top-level value is, in either encoding. */
typedef enum CodecValueKind
{
	CODEC_ABSENT = 0,			/* missing, JSON null, or empty flat value */
	CODEC_TEXT,					/* flat encoding: the field's text */
	CODEC_STRING,				/* JSON string (text is de-escaped) */
	CODEC_NUMBER,				/* JSON number (text is the token) */
	CODEC_BOOL,					/* JSON true or false */
	CODEC_OBJECT,				/* JSON object */
	CODEC_ARRAY					/* JSON array */
} CodecValueKind;

/*
 * One top-level value.  text/len is what the rules read (NUL-terminated;
 * for CODEC_TEXT it may hold NUL bytes, len is authoritative); raw/rawlen
 * is the value as it appeared on the wire, echoed (cut) in messages.
 */
typedef struct CodecValue
{
	CodecValueKind kind;
	const char *text;
	int			len;
	const char *raw;
	int			rawlen;
} CodecValue;

/* The values of one entry, and for JSON the attributes built while parsing. */
typedef struct CodecDocument
{
	CodecValue	values[CODEC_NKEYS];
	Jsonb	   *attributes;		/* JSON: built object, when it is one */
	char	   *attributes_error;	/* JSON: why the object was refused */
} CodecDocument;

/* Names of the keys, indexed by CodecKey. */
extern const char *const codec_key_names[CODEC_NKEYS];

/* codec.c */
extern int	codec_key_lookup(const char *name, int len);
extern int	codec_find_duplicate(char **names, const int *lens, int n);

/* codec_text.c */
extern char *codec_echo(const char *value, int len);
extern int	codec_utf8_clip(const char *s, int len, int limit);
extern bool codec_valid_utf8(const char *s, int len);
extern char *codec_escape(const char *value, int len, int limit, int *outlen,
						  bool *cut);

/*
 * The attributes object while a parse builds it (codec_attrs.c).  The
 * calls take the document depth of the current token (the top-level
 * object is depth 1); building stops at the first rule the object breaks.
 */
typedef struct CodecAttrs
{
	bool		building;		/* nothing refused yet: still building */
	int			base;			/* document depth of the attributes object */
	int64		size;			/* estimated jsonb size so far */
	CodecBuilder *jb;
	bool		done;			/* the object was closed whole */
	char	   *error;			/* why it was refused (the first reason) */
	struct AttrFrame *frames;	/* open containers, by level from 1 */
} CodecAttrs;

/* codec_attrs.c */
extern void codec_attrs_begin(CodecAttrs *a, int depth);
extern void codec_attrs_open(CodecAttrs *a, int depth, bool is_array);
extern void codec_attrs_close(CodecAttrs *a, int depth, bool is_array);
extern void codec_attrs_key(CodecAttrs *a, int depth, char *fname);
extern void codec_attrs_scalar(CodecAttrs *a, int depth, char *token,
							   JsonTokenType type);

/* codec_json.c */
extern bool codec_json_parse_payload(const char *json, int len,
									 CodecDocument *doc, char **error);
extern bool codec_json_parse_attributes(const char *json, int len,
										Jsonb **attributes, char **error);

#endif							/* CODEC_INTERNAL_H */
