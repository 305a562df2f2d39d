/*-------------------------------------------------------------------------
 *
 * codec_build.h
 *	  The seam between the codec's parsing and validation core (codec.c,
 *	  codec_json.c, codec_attrs.c, codec_text.c) and the server routines
 *	  that turn accepted values into PostgreSQL data.
 *
 * The core decides: which entries are valid, which message an invalid one
 * gets, what the attributes object holds (Buffers replaced, numbers that
 * numeric can hold, nesting within PROCESSOR_ATTR_MAX_DEPTH).  It calls
 * these functions only for what it has already accepted.  In the server
 * they are codec_build.c: jsonb through pushJsonbValue, numeric_in,
 * float8in, PostgreSQL's datetime parser.  test/fuzz/standalone.c gives a
 * second implementation, with no server behind it, that checks every call
 * it receives (containers balanced, a key before each object value, depth
 * within the limit, Buffer replacements valid base64), so that the core can
 * be fuzzed on its own, fast, outside any backend.
 *
 * None of these raise an ERROR for what the core hands them (only out of
 * memory): the core's checks come first.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CODEC_BUILD_H
#define CODEC_BUILD_H

#include "codec.h"

/* A JSON object or array under construction (jsonb in the server). */
typedef struct CodecBuilder CodecBuilder;

/* A new, empty builder (its first call must open an object). */
extern CodecBuilder *codec_build_begin(void);

/* Open an object or array as the next value (or as the root). */
extern void codec_build_open(CodecBuilder *b, bool is_array);

/* Close the innermost open container. */
extern void codec_build_close(CodecBuilder *b, bool is_array);

/* The next key of the innermost object (valid UTF-8, no NUL). */
extern void codec_build_key(CodecBuilder *b, const char *key, int len);

/* A string value (valid UTF-8, no NUL). */
extern void codec_build_string(CodecBuilder *b, const char *s, int len);

/*
 * A number value from its JSON token, already known to fit numeric.
 * Returns the bytes it takes (for the core's size estimate).
 */
extern int	codec_build_number(CodecBuilder *b, const char *token);

extern void codec_build_bool(CodecBuilder *b, bool value);
extern void codec_build_null(CodecBuilder *b);

/*
 * Replace the value just completed in the innermost open container (an
 * object: a Buffer) by this string.
 */
extern void codec_build_replace_last(CodecBuilder *b, const char *s, int len);

/*
 * The finished root object as jsonb.  Only after the root was closed;
 * NULL when nothing was built.
 */
extern Jsonb *codec_build_finish(CodecBuilder *b);

/*
 * The jsonb '{}', made once per process and shared: callers copy it or only
 * read it, like any jsonb.
 */
extern Jsonb *codec_build_empty_object(void);

/*
 * A JSON number's text (the JSON grammar already checked) as float8.
 * False when float8 cannot hold it (overflow or underflow).
 */
extern bool codec_read_float8(const char *text, float8 *result);

/* How an ISO-8601 date-time text (shape already checked) read. */
typedef enum CodecTimestampResult
{
	CODEC_TS_OK = 0,
	CODEC_TS_INVALID,			/* no such date or time (2026-02-30) */
	CODEC_TS_OUT_OF_RANGE		/* outside timestamptz's range */
} CodecTimestampResult;

/* Read len bytes of ISO-8601 text with an explicit zone into *ts. */
extern CodecTimestampResult codec_read_timestamp(const char *text, int len,
												 TimestampTz *ts);

#endif							/* CODEC_BUILD_H */
