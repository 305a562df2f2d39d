/*-------------------------------------------------------------------------
 *
 * fuzz_common.c
 *	  Fuzz inputs as stream entries, and the invariants of a decode (see
 *	  fuzz_common.h).  Builds with or without FRONTEND.
 *
 *-------------------------------------------------------------------------
 */
#include "fuzz_common.h"

#include <math.h>

#include "mb/pg_wchar.h"

void
fuzz_fail(const char *what, const char *detail)
{
	fprintf(stderr, "FUZZ FINDING: %s%s%s\n", what,
			detail ? ": " : "", detail ? detail : "");
	abort();
}

/* An exact-size, NUL-terminated malloc'd copy (freed by fuzz_free_entry). */
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

void
fuzz_free_entry(StreamEntry *e)
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

void
fuzz_payload_entry(StreamEntry *e, const uint8_t *data, size_t size)
{
	alloc_entry(e, 1);
	e->names[0] = copy_bytes((const uint8_t *) "payload", 7);
	e->name_lens[0] = 7;
	e->values[0] = copy_bytes(data, size);
	e->value_lens[0] = (int) size;
}

void
fuzz_flat_entry(StreamEntry *e, const uint8_t *data, size_t size)
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

bool
fuzz_valid_text(const char *s, int len)
{
	return pg_encoding_verifymbstr(PG_UTF8, s, len) == len;
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
		!fuzz_valid_text(pos->device_id, len))
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
	if (pos->attributes == NULL)
		fuzz_fail("valid position without attributes", NULL);
}

Jsonb *
fuzz_decode_and_check(const StreamEntry *e, int max_entry_bytes)
{
	Position	pos;
	char	   *error = NULL;
	int			len;

	if (codec_decode_entry(e, max_entry_bytes, &pos, &error))
	{
		check_position(&pos);
		return pos.attributes;
	}
	if (error == NULL)
		fuzz_fail("invalid entry without a message", NULL);
	len = strlen(error);
	if (len == 0 || len > FUZZ_MAX_ERROR_LEN || !fuzz_valid_text(error, len))
		fuzz_fail("bad error message", error);
	return NULL;
}
