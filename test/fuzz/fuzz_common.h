/*-------------------------------------------------------------------------
 *
 * fuzz_common.h
 *	  What both codec fuzz harnesses share: turning one fuzz input into
 *	  stream entries, and the invariants every decode must keep.
 *
 * fuzz_codec.c (hosted in a backend, the real server routines) and
 * standalone.c (the parsing and validation core alone, behind
 * src/codec_build.h) feed the same entries to the codec and check the same
 * rules; fuzz_common.c builds in either setting (with or without
 * FRONTEND).
 *
 *-------------------------------------------------------------------------
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include "codec.h"

/* Longest possible error message: catalogue text plus a cut echo. */
#define FUZZ_MAX_ERROR_LEN	512

/* Report a broken invariant and abort, so that libFuzzer keeps the input. */
extern void fuzz_fail(const char *what, const char *detail) pg_attribute_noreturn();

/*
 * The JSON encoding: one field, "payload", holding the input.  Names and
 * values are exact-size malloc'd copies (NUL-terminated, as redis.c
 * delivers them) so that ASan sees any read past a value.
 */
extern void fuzz_payload_entry(StreamEntry *e, const uint8_t *data,
							   size_t size);

/*
 * The flat encoding: the input split on 0xFE bytes into name, value,
 * name, value, ... (a missing last value is empty).
 */
extern void fuzz_flat_entry(StreamEntry *e, const uint8_t *data, size_t size);

extern void fuzz_free_entry(StreamEntry *e);

/* Is s (len bytes) valid UTF-8 without NUL bytes? */
extern bool fuzz_valid_text(const char *s, int len);

/*
 * Decode one entry and check the outcome: a valid position keeps SPEC §1's
 * rules (device_id 1..64 bytes of valid UTF-8 without control characters,
 * lat/lon/heading in range, finite numbers, satellites/priority 0..255,
 * attributes present); an invalid entry has a message that is valid UTF-8,
 * without NUL, no longer than a message with a 64-byte echo can be.
 * Returns the position's attributes (NULL for an invalid entry) for the
 * caller's own checks.
 */
extern Jsonb *fuzz_decode_and_check(const StreamEntry *e, int max_entry_bytes);

#endif							/* FUZZ_COMMON_H */
