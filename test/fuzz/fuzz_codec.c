/*-------------------------------------------------------------------------
 *
 * fuzz_codec.c
 *	  libFuzzer harness for the codec (src/codec.c, src/codec_json.c),
 *	  hosted inside a PostgreSQL backend.
 *
 * The codec calls the server's own non-throwing routines: jsonapi's
 * pg_parse_json, float8in_internal_opt_error, ParseDateTime/DecodeDateTime,
 * numeric_in, pushJsonbValue/JsonbValueToJsonb, pg_verify_mbstr.  They live
 * in the postgres executable, which cannot be linked into a standalone
 * fuzzer, and stubbing them would fuzz the stubs.  So this file is built,
 * together with the codec's own sources, as a loadable module with
 * clang's -fsanitize=fuzzer-no-link,address,undefined; test/fuzz/run.sh
 * loads it into a single-user backend (postgres --single, with the ASan
 * runtime preloaded) and calls processor_fuzz_codec(), which hands control
 * to libFuzzer through LLVMFuzzerRunDriver.  Every input then runs against
 * the real server code, exactly as in the worker.
 *
 * One input is decoded three ways, each from exact-size malloc'd copies
 * (NUL-terminated, as redis.c delivers them) so that ASan sees any read
 * past a value:
 *	1. as the "payload" field of an entry (the JSON encoding);
 *	2. split on 0xFE bytes into name, value, name, value, ... (the flat
 *	   encoding; a missing last value is empty), with
 *	   processor.max_entry_bytes at its default (1 MB) and at 64 bytes;
 *	3. the entry of 2. rendered as a dead letter.
 * Beyond the sanitizers' checks, the harness aborts (a finding) when
 *	- anything raises an ERROR (the codec promises it never does for any
 *	  input: SPEC §1);
 *	- a valid position breaks a rule of SPEC §1 (device_id 1..64 bytes of
 *	  valid UTF-8 without control characters, lat/lon/heading in range,
 *	  finite numbers, satellites/priority 0..255, attributes an object);
 *	- an error message is not valid UTF-8, holds a NUL, or is longer than
 *	  a message with a 64-byte echo can be;
 *	- a dead letter is not a jsonb object, or its text is not valid UTF-8.
 *
 * Memory: every input's allocations go to one memory context, reset after
 * it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "processor.h"

PG_MODULE_MAGIC;

/* libFuzzer's entry point when main() is someone else's (LLVM >= 11). */
extern int	LLVMFuzzerRunDriver(int *argc, char ***argv,
								int (*cb) (const uint8_t *data, size_t size));

PG_FUNCTION_INFO_V1(processor_fuzz_codec);

/* Longest possible error message: catalogue text plus a cut echo. */
#define FUZZ_MAX_ERROR_LEN	512

static MemoryContext fuzz_cxt = NULL;

/* Report a broken invariant and abort, so that libFuzzer keeps the input. */
static void
fuzz_fail(const char *what, const char *detail)
{
	fprintf(stderr, "FUZZ FINDING: %s%s%s\n", what,
			detail ? ": " : "", detail ? detail : "");
	abort();
}

/* An exact-size, NUL-terminated malloc'd copy (freed by free_entry). */
static char *
copy_bytes(const uint8_t *data, size_t len)
{
	char	   *p = malloc(len + 1);

	if (p == NULL)
		fuzz_fail("out of memory", NULL);
	memcpy(p, data, len);
	p[len] = '\0';
	return p;
}

static void
free_entry(StreamEntry *e)
{
	int			i;

	for (i = 0; i < e->nfields; i++)
	{
		free(e->names[i]);
		free(e->values[i]);
	}
	free(e->names);
	free(e->name_lens);
	free(e->values);
	free(e->value_lens);
}

/* Allocate room for n fields. */
static void
alloc_entry(StreamEntry *e, int n)
{
	memset(e, 0, sizeof(StreamEntry));
	e->id = "1-1";
	e->nfields = n;
	e->names = calloc(Max(n, 1), sizeof(char *));
	e->values = calloc(Max(n, 1), sizeof(char *));
	e->name_lens = calloc(Max(n, 1), sizeof(int));
	e->value_lens = calloc(Max(n, 1), sizeof(int));
	if (!e->names || !e->values || !e->name_lens || !e->value_lens)
		fuzz_fail("out of memory", NULL);
}

/* The JSON encoding: one field, "payload". */
static void
payload_entry(StreamEntry *e, const uint8_t *data, size_t size)
{
	alloc_entry(e, 1);
	e->names[0] = copy_bytes((const uint8_t *) "payload", 7);
	e->name_lens[0] = 7;
	e->values[0] = copy_bytes(data, size);
	e->value_lens[0] = (int) size;
}

/* The flat encoding: name 0xFE value 0xFE name ... */
static void
flat_entry(StreamEntry *e, const uint8_t *data, size_t size)
{
	int			ntokens = 1;
	int			tok = 0;
	size_t		start = 0;
	size_t		i;

	for (i = 0; i < size; i++)
		if (data[i] == 0xFE)
			ntokens++;
	alloc_entry(e, (ntokens + 1) / 2);
	for (i = 0; i <= size; i++)
	{
		if (i < size && data[i] != 0xFE)
			continue;
		if (tok % 2 == 0)
		{
			e->names[tok / 2] = copy_bytes(data + start, i - start);
			e->name_lens[tok / 2] = (int) (i - start);
		}
		else
		{
			e->values[tok / 2] = copy_bytes(data + start, i - start);
			e->value_lens[tok / 2] = (int) (i - start);
		}
		tok++;
		start = i + 1;
	}
	if (tok % 2 == 1)
	{
		e->values[tok / 2] = copy_bytes((const uint8_t *) "", 0);
		e->value_lens[tok / 2] = 0;
	}
}

static bool
valid_text(const char *s, int len)
{
	return memchr(s, '\0', len) == NULL &&
		pg_verify_mbstr(PG_UTF8, s, len, true);
}

/* SPEC §1's rules, on a position the codec called valid. */
static void
check_position(const Position *pos)
{
	int			len;
	int			i;

	if (pos->device_id == NULL)
		fuzz_fail("valid position without device_id", NULL);
	len = strlen(pos->device_id);
	if (len < 1 || len > PROCESSOR_DEVICE_ID_MAX ||
		!valid_text(pos->device_id, len))
		fuzz_fail("bad device_id in a valid position", NULL);
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) pos->device_id[i];

		if (c < 0x20 || c == 0x7f)
			fuzz_fail("control character in device_id", NULL);
	}
	if (!(pos->lat >= -90 && pos->lat <= 90) ||
		!(pos->lon >= -180 && pos->lon <= 180))
		fuzz_fail("lat/lon out of range in a valid position", NULL);
	if ((pos->has_altitude && !isfinite(pos->altitude)) ||
		(pos->has_speed && !(pos->speed >= 0 && isfinite(pos->speed))) ||
		(pos->has_heading && !(pos->heading >= 0 && pos->heading <= 360)))
		fuzz_fail("optional number out of range in a valid position", NULL);
	if ((pos->has_satellites && (pos->satellites < 0 || pos->satellites > 255)) ||
		(pos->has_priority && (pos->priority < 0 || pos->priority > 255)))
		fuzz_fail("integer out of range in a valid position", NULL);
	if (!IS_VALID_TIMESTAMP(pos->ts))
		fuzz_fail("ts out of range in a valid position", NULL);
	if (pos->attributes == NULL || !JB_ROOT_IS_OBJECT(pos->attributes) ||
		JB_ROOT_IS_SCALAR(pos->attributes))
		fuzz_fail("attributes is not an object", NULL);
}

/* Decode one entry and check the outcome. */
static void
decode_and_check(const StreamEntry *e, int max_entry_bytes)
{
	Position	pos;
	char	   *error = NULL;

	if (codec_decode_entry(e, max_entry_bytes, &pos, &error))
		check_position(&pos);
	else
	{
		int			len;

		if (error == NULL)
			fuzz_fail("invalid entry without a message", NULL);
		len = strlen(error);
		if (len == 0 || len > FUZZ_MAX_ERROR_LEN || !valid_text(error, len))
			fuzz_fail("bad error message", error);
	}
}

/* Render the entry as a dead letter and check the jsonb. */
static void
dead_letter_and_check(const StreamEntry *e)
{
	Jsonb	   *fields = codec_dead_letter_fields(e);
	char	   *text;

	if (fields == NULL || !JB_ROOT_IS_OBJECT(fields) ||
		JB_ROOT_IS_SCALAR(fields))
		fuzz_fail("dead letter is not a jsonb object", NULL);
	text = JsonbToCString(NULL, &fields->root, VARSIZE(fields));
	if (!valid_text(text, strlen(text)))
		fuzz_fail("dead letter text is not valid UTF-8", NULL);
}

/* One input (see the file header). */
static int
fuzz_one(const uint8_t *data, size_t size)
{
	MemoryContext old;
	StreamEntry payload;
	StreamEntry flat;

	if (size > INT_MAX / 2)
		return 0;
	old = MemoryContextSwitchTo(fuzz_cxt);
	payload_entry(&payload, data, size);
	flat_entry(&flat, data, size);

	PG_TRY();
	{
		decode_and_check(&payload, 1024 * 1024);
		decode_and_check(&flat, 1024 * 1024);
		decode_and_check(&flat, 64);
		dead_letter_and_check(&flat);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(fuzz_cxt);
		edata = CopyErrorData();
		fuzz_fail("the codec raised an ERROR", edata->message);
	}
	PG_END_TRY();

	free_entry(&payload);
	free_entry(&flat);
	MemoryContextSwitchTo(old);
	MemoryContextReset(fuzz_cxt);
	return 0;
}

/*
 * processor_fuzz_codec(args text[]): run libFuzzer with these arguments
 * (options and corpus directories, as on its command line).  Returns
 * libFuzzer's result when the time is up; on a finding libFuzzer writes
 * the input out and exits the process.
 */
Datum
processor_fuzz_codec(PG_FUNCTION_ARGS)
{
	ArrayType  *args = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	int			argc;
	char	  **argv;
	int			i;

	deconstruct_array(args, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &nelems);
	argv = palloc0(sizeof(char *) * (nelems + 2));
	argv[0] = "fuzz_codec";
	for (i = 0; i < nelems; i++)
		argv[i + 1] = nulls[i] ? "" : TextDatumGetCString(elems[i]);
	argc = nelems + 1;

	fuzz_cxt = AllocSetContextCreate(TopMemoryContext, "fuzz_codec",
									 ALLOCSET_DEFAULT_SIZES);
	PG_RETURN_INT32(LLVMFuzzerRunDriver(&argc, &argv, fuzz_one));
}
