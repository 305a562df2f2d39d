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
 * standalone.c fuzzes the codec's parsing and validation core without a
 * backend (fast, but with simple stand-ins for the server routines); this
 * harness is the one that runs the codec exactly as the worker does.  Both
 * share fuzz_common.c.
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
#include "fuzz_common.h"

PG_MODULE_MAGIC;

/* libFuzzer's entry point when main() is someone else's (LLVM >= 11). */
extern int	LLVMFuzzerRunDriver(int *argc, char ***argv,
								int (*cb) (const uint8_t *data, size_t size));

PG_FUNCTION_INFO_V1(processor_fuzz_codec);

static MemoryContext fuzz_cxt = NULL;

/* A valid position's attributes must be a jsonb object. */
static void
decode_and_check(const StreamEntry *e, int max_entry_bytes)
{
	Jsonb	   *attributes = fuzz_decode_and_check(e, max_entry_bytes);

	if (attributes != NULL &&
		(!JB_ROOT_IS_OBJECT(attributes) || JB_ROOT_IS_SCALAR(attributes)))
		fuzz_fail("attributes is not an object", NULL);
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
	if (!fuzz_valid_text(text, strlen(text)))
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
	fuzz_payload_entry(&payload, data, size);
	fuzz_flat_entry(&flat, data, size);

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

	fuzz_free_entry(&payload);
	fuzz_free_entry(&flat);
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
