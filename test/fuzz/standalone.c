/*-------------------------------------------------------------------------
 *
 * standalone.c
 *	  libFuzzer target for the codec's parsing and validation core alone:
 *	  src/codec.c, codec_json.c, codec_attrs.c and codec_text.c built with
 *	  FRONTEND, linked with PostgreSQL's libpgcommon (its JSON parser,
 *	  base64, UTF-8 routines) and this file, which stands in for the server
 *	  behind src/codec_build.h.  No backend: one executable, run by any user,
 *	  that libFuzzer's own tooling (-jobs, -merge, -minimize_crash) and a
 *	  debugger take directly; the hosted harness (fuzz_codec.c) is the one
 *	  that runs the codec with the server's routines, as the worker does.
 *
 * The stand-in builder builds nothing: it checks every call the core makes
 * and aborts (a finding) on any misuse the server's jsonb code would have
 * turned into a crash or a wrong document:
 *	- the root is an object; containers close in order, with the kind
 *	  they were opened with; the root is finished only once closed;
 *	- an object value always follows a key, a key only comes in an object;
 *	- nesting never exceeds PROCESSOR_ATTR_MAX_DEPTH (the same limit the
 *	  server build enforces: the core's code is the same);
 *	- keys and strings are valid UTF-8 without NUL, numbers are valid JSON
 *	  numbers, a Buffer replacement follows a completed object and is
 *	  standard base64;
 *	- float8 and timestamp reads are asked only for text the core's own
 *	  checks accepted.
 * float8 is read with strtod under float8in's out-of-range rule; a
 * timestamp with a small calendar check; json_errdetail (server-only in
 * PostgreSQL 15) by a stand-in that quotes the token.  The server's own
 * routines are the hosted harness's to exercise.
 *
 * Memory: palloc and friends are defined here over malloc, one block per
 * allocation (so ASan sees every overrun), all freed after each input.
 *
 * Build and run: test/fuzz/run.sh standalone [SECONDS].
 *
 *-------------------------------------------------------------------------
 */
#include "postgres_fe.h"

#include <limits.h>
#include <math.h>

#include "codec_build.h"
#include "common/base64.h"
#include "common/jsonapi.h"
#include "fuzz_common.h"

/* ----------------------------------------------------------------
 * Memory: one malloc'd block per palloc, on a list freed per input
 * ----------------------------------------------------------------
 */
typedef struct Chunk
{
	struct Chunk *prev;
	struct Chunk *next;
	size_t		size;
	size_t		pad;			/* keeps the payload 16-byte aligned */
} Chunk;

static Chunk chunks = {&chunks, &chunks, 0, 0};

static void *
chunk_alloc(size_t size, bool zero)
{
	Chunk	   *c = zero ? calloc(1, sizeof(Chunk) + size) :
		malloc(sizeof(Chunk) + size);

	if (c == NULL)
		fuzz_fail("out of memory", NULL);
	c->size = size;
	c->next = chunks.next;
	c->prev = &chunks;
	chunks.next->prev = c;
	chunks.next = c;
	return c + 1;
}

static void
chunk_unlink(Chunk *c)
{
	c->prev->next = c->next;
	c->next->prev = c->prev;
}

static void
free_all_chunks(void)
{
	while (chunks.next != &chunks)
	{
		Chunk	   *c = chunks.next;

		chunk_unlink(c);
		free(c);
	}
}

void *
palloc(Size size)
{
	return chunk_alloc(size, false);
}

void *
palloc0(Size size)
{
	return chunk_alloc(size, true);
}

void *
palloc_extended(Size size, int flags)
{
	return chunk_alloc(size, (flags & MCXT_ALLOC_ZERO) != 0);
}

void
pfree(void *pointer)
{
	Chunk	   *c = (Chunk *) pointer - 1;

	chunk_unlink(c);
	free(c);
}

void *
repalloc(void *pointer, Size size)
{
	Chunk	   *old = (Chunk *) pointer - 1;
	void	   *p = chunk_alloc(size, false);

	memcpy(p, pointer, Min(old->size, size));
	pfree(pointer);
	return p;
}

char *
pstrdup(const char *in)
{
	return pnstrdup(in, strlen(in));
}

char *
pnstrdup(const char *in, Size size)
{
	char	   *p;

	size = strnlen(in, size);
	p = palloc(size + 1);
	memcpy(p, in, size);
	p[size] = '\0';
	return p;
}

/* ----------------------------------------------------------------
 * The checking builder (codec_build.h)
 * ----------------------------------------------------------------
 */
struct CodecBuilder
{
	int			depth;			/* open containers */
	bool		done;			/* the root was closed */
	bool		is_array[PROCESSOR_ATTR_MAX_DEPTH + 1];	/* by depth, from 1 */
	bool		key_pending[PROCESSOR_ATTR_MAX_DEPTH + 1];
	bool		last_was_object[PROCESSOR_ATTR_MAX_DEPTH + 1];
};

/* Any non-NULL pointer will do: nothing reads a standalone Jsonb. */
static char built_jsonb;

static void
check_text(const char *what, const char *s, int len)
{
	if (len < 0 || strlen(s) != (size_t) len || !fuzz_valid_text(s, len))
		fuzz_fail(what, "not valid UTF-8 text of the given length");
}

/* A value of any kind takes the next slot of the innermost container. */
static void
take_slot(CodecBuilder *b, const char *what)
{
	if (b->depth == 0)
		fuzz_fail(what, "a value outside any container");
	if (!b->is_array[b->depth])
	{
		if (!b->key_pending[b->depth])
			fuzz_fail(what, "an object value without a key");
		b->key_pending[b->depth] = false;
	}
	b->last_was_object[b->depth] = false;
}

CodecBuilder *
codec_build_begin(void)
{
	return palloc0(sizeof(CodecBuilder));
}

void
codec_build_open(CodecBuilder *b, bool is_array)
{
	if (b->done)
		fuzz_fail("codec_build_open", "after the root closed");
	if (b->depth == 0 && is_array)
		fuzz_fail("codec_build_open", "the root is an array");
	if (b->depth > 0)
		take_slot(b, "codec_build_open");
	if (b->depth + 1 > PROCESSOR_ATTR_MAX_DEPTH)
		fuzz_fail("codec_build_open",
				  "nested deeper than PROCESSOR_ATTR_MAX_DEPTH");
	b->depth++;
	b->is_array[b->depth] = is_array;
	b->key_pending[b->depth] = false;
	b->last_was_object[b->depth] = false;
}

void
codec_build_close(CodecBuilder *b, bool is_array)
{
	if (b->depth == 0)
		fuzz_fail("codec_build_close", "nothing open");
	if (b->is_array[b->depth] != is_array)
		fuzz_fail("codec_build_close", "closes the other kind of container");
	if (b->key_pending[b->depth])
		fuzz_fail("codec_build_close", "a key without a value");
	b->depth--;
	if (b->depth == 0)
		b->done = true;
	else
		b->last_was_object[b->depth] = !is_array;
}

void
codec_build_key(CodecBuilder *b, const char *key, int len)
{
	if (b->depth == 0 || b->is_array[b->depth])
		fuzz_fail("codec_build_key", "a key outside an object");
	if (b->key_pending[b->depth])
		fuzz_fail("codec_build_key", "two keys in a row");
	check_text("codec_build_key", key, len);
	b->key_pending[b->depth] = true;
}

void
codec_build_string(CodecBuilder *b, const char *s, int len)
{
	take_slot(b, "codec_build_string");
	check_text("codec_build_string", s, len);
}

int
codec_build_number(CodecBuilder *b, const char *token)
{
	take_slot(b, "codec_build_number");
	if (!IsValidJsonNumber(token, strlen(token)))
		fuzz_fail("codec_build_number", "not a JSON number");
	return 8 + strlen(token) / 2;
}

void
codec_build_bool(CodecBuilder *b, bool value)
{
	take_slot(b, "codec_build_bool");
}

void
codec_build_null(CodecBuilder *b)
{
	take_slot(b, "codec_build_null");
}

void
codec_build_replace_last(CodecBuilder *b, const char *s, int len)
{
	int			declen;
	char	   *dec;

	if (b->depth == 0 || !b->last_was_object[b->depth])
		fuzz_fail("codec_build_replace_last", "no object just completed");
	check_text("codec_build_replace_last", s, len);
	declen = pg_b64_dec_len(len);
	dec = palloc(declen + 1);
	if (len % 4 != 0 || pg_b64_decode(s, len, dec, declen) < 0)
		fuzz_fail("codec_build_replace_last", "not standard base64");
	b->last_was_object[b->depth] = false;
}

Jsonb *
codec_build_finish(CodecBuilder *b)
{
	if (!b->done)
		fuzz_fail("codec_build_finish", "the root is not closed");
	return (Jsonb *) &built_jsonb;
}

Jsonb *
codec_build_empty_object(void)
{
	return (Jsonb *) &built_jsonb;
}

/* float8in's rule: overflow and underflow to zero are out of range. */
bool
codec_read_float8(const char *text, float8 *result)
{
	char	   *end;

	if (!IsValidJsonNumber(text, strlen(text)))
		fuzz_fail("codec_read_float8", "not a JSON number");
	errno = 0;
	*result = strtod(text, &end);
	if (*end != '\0')
		fuzz_fail("codec_read_float8", "strtod stopped early");
	return !(errno == ERANGE && (*result == 0.0 || isinf(*result)));
}

/*
 * The shape is checked by the core (YYYY-MM-DD?hh:mm[:ss[.f]] and a zone);
 * this checks the calendar and gives a timestamp of the right range.
 */
CodecTimestampResult
codec_read_timestamp(const char *text, int len, TimestampTz *ts)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int			y,
				mo,
				d,
				h,
				mi;

	if (memchr(text, '\0', len) != NULL ||
		sscanf(text, "%4d-%2d-%2d%*c%2d:%2d", &y, &mo, &d, &h, &mi) != 5)
		fuzz_fail("codec_read_timestamp", "text not of the checked shape");
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 24 || mi > 59)
		return CODEC_TS_INVALID;
	*ts = ((int64) (y - 2000) * 366 * 24 * 3600) * USECS_PER_SEC;
	return CODEC_TS_OK;
}

/*
 * PostgreSQL 15 builds json_errdetail into the server only.  The stand-in
 * quotes the token the way the server's messages do, so that a wrong cut
 * of it by the core (json_error_text) reads out of bounds or leaves
 * invalid UTF-8 in the message, both findings.
 */
char *
json_errdetail(JsonParseErrorType error, JsonLexContext *lex)
{
	if (lex->token_start == NULL || lex->token_terminator <= lex->token_start)
		return psprintf("JSON parse error %d.", (int) error);
	return psprintf("Token \"%.*s\" is invalid (error %d).",
					(int) (lex->token_terminator - lex->token_start),
					lex->token_start, (int) error);
}

/* ----------------------------------------------------------------
 * The fuzz target
 * ----------------------------------------------------------------
 */
int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	StreamEntry payload;
	StreamEntry flat;

	if (size > INT_MAX / 2)
		return 0;
	fuzz_payload_entry(&payload, data, size);
	fuzz_flat_entry(&flat, data, size);

	(void) fuzz_decode_and_check(&payload, 1024 * 1024);
	(void) fuzz_decode_and_check(&flat, 1024 * 1024);
	(void) fuzz_decode_and_check(&flat, 64);
	if (codec_dead_letter_fields(&flat) == NULL)
		fuzz_fail("no dead letter for an entry with fields", NULL);

	fuzz_free_entry(&payload);
	fuzz_free_entry(&flat);
	free_all_chunks();
	return 0;
}
