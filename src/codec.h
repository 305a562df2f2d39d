/*-------------------------------------------------------------------------
 *
 * codec.h
 *	  The codec's interface: stream entries, decoded positions, the limits of
 *	  the wire contract (SPEC §1, §2), and the decode and dead-letter calls.
 *
 * Kept apart from processor.h so that the codec's parsing and validation
 * core (every codec*.c but codec_build.c) compiles outside the server
 * too: with FRONTEND defined it needs only postgres_fe.h and libpgcommon,
 * and the few server routines it uses sit behind codec_build.h.  That is
 * the seam test/fuzz/standalone.c fuzzes without a backend.  Outside the
 * server a Jsonb is opaque (standalone.c's stand-in never makes one).
 *
 *-------------------------------------------------------------------------
 */
#ifndef CODEC_H
#define CODEC_H

#ifdef FRONTEND
#include "postgres_fe.h"
typedef struct CodecOpaqueJsonb Jsonb;
#else
#include "postgres.h"
#include "utils/jsonb.h"
#endif

#include "datatype/timestamp.h"

/* Limits fixed by the wire contract (SPEC §1, §2). */
#define PROCESSOR_DEVICE_ID_MAX			64	/* bytes */
#define PROCESSOR_ATTR_MAX_DEPTH		64	/* nesting inside attributes */
#define PROCESSOR_ERROR_ECHO_MAX		64	/* bytes of a value in a message */
#define PROCESSOR_DL_VALUE_MAX			8192	/* bytes per dead-letter value */
#define PROCESSOR_DL_FIELDS_MAX			65536	/* bytes per dead-letter object */

/* ----------------------------------------------------------------
 * Stream entries and positions
 * ----------------------------------------------------------------
 */

/*
 * One stream entry as read from Redis, copied into palloc'd memory.
 * Names and values are NUL-terminated copies, but may contain NUL bytes:
 * the lengths are authoritative.  nfields < 0 marks an entry that came back
 * from history without fields (deleted or trimmed from the stream).
 */
typedef struct StreamEntry
{
	char	   *id;				/* "1764151200123-0" */
	int			nfields;
	char	  **names;
	int		   *name_lens;
	char	  **values;
	int		   *value_lens;
	int64		deliveries;		/* from XPENDING; 0 = not known (new entry) */
	const char *error;			/* set: dead-letter with this, undecoded */
} StreamEntry;

/* Room for a stream entry id: two 20-digit numbers, a dash, a NUL. */
#define STREAM_ID_BUFLEN	48

/* One decoded, valid position: the row the worker inserts. */
typedef struct Position
{
	char	   *device_id;		/* valid UTF-8, 1..64 bytes, NUL-terminated */
	TimestampTz ts;
	float8		lat;
	float8		lon;
	float8		altitude;
	float8		speed;
	float8		heading;
	int32		satellites;
	int32		priority;
	bool		has_altitude;
	bool		has_speed;
	bool		has_heading;
	bool		has_satellites;
	bool		has_priority;
	Jsonb	   *attributes;		/* never NULL: '{}' when absent */
} Position;

/* ----------------------------------------------------------------
 * codec.c, codec_text.c
 * ----------------------------------------------------------------
 */

/*
 * Decode one stream entry (either encoding).  On success fills *pos and
 * returns true.  On an invalid entry returns false and sets *error to a
 * palloc'd message from the catalogue of SPEC §1.  Never raises an ERROR
 * for bad input (only for out-of-memory).  max_entry_bytes <= 0 means no
 * limit.
 */
extern bool codec_decode_entry(const StreamEntry *entry, int max_entry_bytes,
							   Position *pos, char **error);

/* Decode a JSON payload alone (the `payload` field's value). */
extern bool codec_decode_payload(const char *payload, int len,
								 Position *pos, char **error);

/*
 * Render an entry's field/value pairs as the jsonb stored in the dead-letter
 * table (SPEC §2): values cut to 8 kB on a character boundary, NUL bytes and
 * invalid UTF-8 escaped as \xNN, the whole object capped at 64 kB.  Returns
 * NULL for an entry without fields.  Never raises an ERROR for any content.
 */
extern Jsonb *codec_dead_letter_fields(const StreamEntry *entry);

#endif							/* CODEC_H */
