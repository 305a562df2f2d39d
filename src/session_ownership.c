/*-------------------------------------------------------------------------
 *
 * session_ownership.c
 *	  Entries the worker holds stay its own: a batch that waits (for a
 *	  retry, the extension, a resume) and the invalid entries parked with
 *	  processor.dead_letter = off are touched with XCLAIM ... JUSTID before
 *	  they reach processor.claim_min_idle, so that neither another consumer
 *	  nor our own claim scan takes them (SPEC §4).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "worker_internal.h"

/* ----------------------------------------------------------------
 * Ownership: held batches and parked entries stay ours
 * ----------------------------------------------------------------
 */

/*
 * How often entries we hold are touched: a third of claim_min_idle, so that
 * a touch that comes late by a retry's duration is still in time.
 */
static long
session_touch_interval_ms(void)
{
	return Max(processor_claim_min_idle / 3, 1);
}

/*
 * Milliseconds until keep_ownership has something to touch, or -1 when we
 * hold nothing (or claiming is off).  Waits are cut to this.
 */
long
session_ms_until_touch(Worker *w)
{
	TimestampTz due = 0;
	long		interval = session_touch_interval_ms();

	if (processor_claim_min_idle <= 0 || w->redis == NULL)
		return -1;
	if (w->batch.present && !w->batch.committed)
		due = TimestampTzPlusMilliseconds(w->batch.touched_at, interval);
	if (w->parked)
	{
		TimestampTz p = TimestampTzPlusMilliseconds(w->parked_touched_at,
													interval);

		due = due == 0 ? p : Min(due, p);
	}
	if (due == 0)
		return -1;
	return TimestampDifferenceMilliseconds(GetCurrentTimestamp(), due);
}

/*
 * Remember an invalid entry left pending (processor.dead_letter = off), so
 * that it is kept fresh and neither we nor another consumer claim it.
 */
void
session_park_entry(Worker *w, const StreamEntry *e, const char *error)
{
	ereport(LOG,
			(errmsg("processor worker %d: invalid entry %s left pending: %s",
					w->number, e->id, error)));
	if (w->parked == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = STREAM_ID_BUFLEN;
		ctl.entrysize = STREAM_ID_BUFLEN;
		ctl.hcxt = TopMemoryContext;
		w->parked = hash_create("processor parked entries", 256, &ctl,
								HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	if (hash_get_num_entries(w->parked) < PARKED_MAX)
		(void) hash_search(w->parked, e->id, HASH_ENTER, NULL);
}

/*
 * Forget the parked entries (the stream changed, or dead letters are on
 * again and history will take them).
 */
void
session_forget_parked(Worker *w)
{
	if (w->parked)
		hash_destroy(w->parked);
	w->parked = NULL;
}

/*
 * XCLAIM ... JUSTID a list of ids; failures are handled like any Redis
 * failure.
 */
static void
touch_ids(Worker *w, const char *stream, const char *group, char **ids, int n)
{
	RedisResult rc;

	w->in_redis = true;
	rc = stream_touch(w->redis, stream, group, w->consumer, ids, n);
	w->in_redis = false;
	if (rc != REDIS_OK)
		session_failed(w, rc, "XCLAIM");
}

/*
 * Keep what we hold from reaching processor.claim_min_idle: a batch that
 * waits (for a retry, the extension, or a resume) and the parked entries.
 * XCLAIM ... JUSTID does not raise delivery counts, so an outage of any
 * length costs no deliveries (SPEC §4).
 */
void
session_keep_ownership(Worker *w)
{
	Batch	   *b = &w->batch;
	TimestampTz now = GetCurrentTimestamp();
	long		interval = session_touch_interval_ms();

	if (processor_claim_min_idle <= 0 || w->redis == NULL)
		return;

	if (b->present && !b->committed &&
		TimestampDifferenceExceeds(b->touched_at, now, interval))
	{
		char	  **ids = palloc(sizeof(char *) * b->nentries);
		int			i;

		for (i = 0; i < b->nentries; i++)
			ids[i] = b->entries[i].id;
		b->touched_at = now;
		touch_ids(w, b->stream, b->group, ids, b->nentries);
	}

	if (w->parked && w->redis &&
		TimestampDifferenceExceeds(w->parked_touched_at, now, interval))
	{
		HASH_SEQ_STATUS seq;
		char	   *id;
		char	  **ids = palloc(sizeof(char *) * hash_get_num_entries(w->parked));
		int			n = 0;

		hash_seq_init(&seq, w->parked);
		while ((id = hash_seq_search(&seq)) != NULL)
			ids[n++] = id;
		w->parked_touched_at = now;
		touch_ids(w, w->stream, w->group, ids, n);
	}
}
